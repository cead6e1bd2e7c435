"""The co-distiller's pieces without the platform: settings, and the exact resume the task relies on.

* Settings: the request maps onto the core's sections (names, defaults); bad values name the field.
* A CoDistiller checkpointed after any batch (through the bytes a checkpoint stores) and rebuilt on the
  saved weights continues bit-for-bit like the uninterrupted one: student, teacher (τ-window kept
  batches), replay draws, prequential windows; with dropout too; with a rolling drift estimate and a
  collaborative teacher (#11) as well.
"""

from __future__ import annotations

import pytest
import torch

from distiller_fixtures import tiny_clicks, tiny_model
from crossadapt.transfer.online.codistillation import OnlineCoDistillConfig, build_codistiller
from crossadapt.transfer.online.replay import ReplayConfig, ReplayController
from services.common.errors import InvalidArgumentError
from services.common.proto import online_codistiller_pb2 as pb
from services.common.training_state import load_tensor_bytes, tensor_bytes
from services.online_codistiller.config import CoDistillationSettings


def test_settings_map_onto_the_cores_config_with_its_defaults() -> None:
    default = CoDistillationSettings.from_proto(pb.CoDistillationConfig()).core_config("cpu")
    core = OnlineCoDistillConfig()
    for name in ("teacher_update_interval", "batch_size", "kd_weight", "temperature", "dense_lr", "embedding_lr",
                 "teacher_dense_lr", "teacher_embedding_lr", "window_batches"):
        assert getattr(default, name) == getattr(core, name), name
    chosen = CoDistillationSettings.from_proto(pb.CoDistillationConfig(
        teacher_update_interval=3, batch_size=64, kd_weight=0.0, teacher_dense_lr=0.01, seed=4,
        drift=pb.CoDistillationDriftSettings(metric="kl", windows=4, low=0.02, high=0.2, max_replay=0.0)))
    config, replay = chosen.core_config("cpu"), chosen.replay_config()
    assert (config.teacher_update_interval, config.batch_size, config.kd_weight, config.teacher_dense_lr,
            config.seed) == (3, 64, 0.0, 0.01, 4)
    assert (replay.drift.metric, replay.drift.windows, replay.theta_low, replay.theta_high, replay.max_ratio) == (
        "kl", 4, 0.02, 0.2, 0.0)
    # The teacher's embedding lr follows the student's unless set (both were fitted to the same batch).
    assert CoDistillationSettings.from_proto(pb.CoDistillationConfig(embedding_lr=0.02)).core_config(
        "cpu").teacher_embedding_lr == 0.02
    assert CoDistillationSettings.from_proto(pb.CoDistillationConfig(
        embedding_lr=0.02, teacher_embedding_lr=0.3)).core_config("cpu").teacher_embedding_lr == 0.3
    with pytest.raises(InvalidArgumentError) as error:
        CoDistillationSettings.from_proto(pb.CoDistillationConfig(drift=pb.CoDistillationDriftSettings(bins=1)))
    assert error.value.field == "config.drift.bins"
    with pytest.raises(InvalidArgumentError) as error:
        CoDistillationSettings.from_proto(pb.CoDistillationConfig(batch_size=0))
    assert error.value.field == "config.batch_size"


def test_adaptive_lambda_maps_onto_the_cores_config_and_bad_values_name_the_field() -> None:
    """config.adaptive (the switch's adaptive_kd, #11): absent is the fixed λ, an empty message the core's
    defaults, set fields override them; out-of-range values are INVALID_ARGUMENT naming the sub-field."""
    from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
    from services.common.proto import common_pb2

    assert CoDistillationSettings.from_proto(pb.CoDistillationConfig()).core_config("cpu").adaptive is None
    empty = CoDistillationSettings.from_proto(pb.CoDistillationConfig(adaptive=common_pb2.AdaptiveKD()))
    assert empty.core_config("cpu").adaptive == AdaptiveKDConfig()
    chosen = CoDistillationSettings.from_proto(pb.CoDistillationConfig(adaptive=common_pb2.AdaptiveKD(
        lambda_floor=0.0, replay_floor=1.0, online=common_pb2.AdaptiveSchedule(warmup=0, ema_window=5))))
    adaptive = chosen.core_config("cpu").adaptive
    assert (adaptive.lambda_floor, adaptive.replay_floor, adaptive.online.warmup, adaptive.online.ema_window) == (
        0.0, 1.0, 0, 5)  # explicit zeros kept
    for bad, field in ((common_pb2.AdaptiveKD(gap_onset=0.5), "config.adaptive"),
                       (common_pb2.AdaptiveKD(replay_floor=1.5), "config.adaptive.replay_floor"),
                       (common_pb2.AdaptiveKD(gap_saturation=float("inf")), "config.adaptive.gap_saturation"),
                       (common_pb2.AdaptiveKD(online=common_pb2.AdaptiveSchedule(warmup=-1)),
                        "config.adaptive.online.warmup")):
        with pytest.raises(InvalidArgumentError) as error:
            CoDistillationSettings.from_proto(pb.CoDistillationConfig(adaptive=bad))
        assert error.value.field == field, (bad, error.value)


def test_rolling_drift_and_collaborative_map_onto_the_cores_config_and_bad_values_name_the_field() -> None:
    """config.drift.rolling / window_rows and config.collaborative (the switch's online.drift.rolling and
    online.collaborative, #11): absent is the paper's (fixed ratio, labels-only teacher), an empty
    collaborative message the core's defaults; bad values are INVALID_ARGUMENT naming the sub-field."""
    from crossadapt.transfer.online.collaborative import CollaborativeConfig

    default = CoDistillationSettings.from_proto(pb.CoDistillationConfig())
    assert default.core_config("cpu").collaborative is None and not default.replay_config().rolling
    assert default.replay_config().window_rows == ReplayConfig().window_rows
    empty = CoDistillationSettings.from_proto(pb.CoDistillationConfig(collaborative=pb.CollaborativeCoDistillation()))
    assert empty.core_config("cpu").collaborative == CollaborativeConfig()
    chosen = CoDistillationSettings.from_proto(pb.CoDistillationConfig(
        collaborative=pb.CollaborativeCoDistillation(weight=0.5, temperature=2.0, gate="gap", scale_by_t2=False),
        drift=pb.CoDistillationDriftSettings(rolling=True, window_rows=500, windows=4)))
    assert chosen.core_config("cpu").collaborative == CollaborativeConfig(weight=0.5, temperature=2.0, gate="gap",
                                                                          scale_by_t2=False)
    replay = chosen.replay_config()
    assert (replay.rolling, replay.window_rows, replay.drift.windows) == (True, 500, 4)
    # The plan is stored in the operation record as JSON: the options survive the round trip.
    assert CoDistillationSettings.model_validate_json(chosen.model_dump_json()) == chosen
    for bad, field in ((pb.CoDistillationConfig(collaborative=pb.CollaborativeCoDistillation(weight=0.0)),
                        "config.collaborative.weight"),
                       (pb.CoDistillationConfig(collaborative=pb.CollaborativeCoDistillation(temperature=-1.0)),
                        "config.collaborative.temperature"),
                       (pb.CoDistillationConfig(collaborative=pb.CollaborativeCoDistillation(gate="teacher_better")),
                        "config.collaborative.gate"),
                       (pb.CoDistillationConfig(collaborative=pb.CollaborativeCoDistillation(gate="")),
                        "config.collaborative.gate"),
                       (pb.CoDistillationConfig(collaborative=pb.CollaborativeCoDistillation(weight=float("nan"))),
                        "config.collaborative.weight"),
                       (pb.CoDistillationConfig(drift=pb.CoDistillationDriftSettings(rolling=True, window_rows=1)),
                        "config.drift.window_rows")):
        with pytest.raises(InvalidArgumentError) as error:
            CoDistillationSettings.from_proto(bad)
        assert error.value.field == field, (bad, error.value)


def test_rolling_drift_and_collaborative_resume_bit_for_bit_from_the_stored_state() -> None:
    """A rolling replay controller (its windows, rows and Δ_shift) and a collaborative teacher (its pending
    τ-window with the student's targets) come back from the bytes a checkpoint stores (`portable_state`:
    the controller's numpy histograms travel as tensors) and the run continues bit-for-bit."""
    from crossadapt.transfer.online.collaborative import CollaborativeConfig
    from services.online_codistiller.pipeline import (
        online_extras,
        portable_state,
        restored_state,
    )

    stream, pool = tiny_clicks(1200, seed=3), tiny_clicks(400, seed=4)
    config = OnlineCoDistillConfig(batch_size=50, teacher_update_interval=3, num_threads=1, window_batches=4,
                                   collaborative=CollaborativeConfig(gate="gap"))
    chunks = [stream.slice(i, min(i + 50, len(stream))) for i in range(0, len(stream), 50)]
    spec = tiny_model(4).spec
    replay_config = ReplayConfig(rolling=True, window_rows=120, theta_low=0.001, theta_high=0.5, max_ratio=0.3,
                                 drift={"windows": 3, "bins": 8})

    def build(student_seed: int = 2, teacher_seed: int = 1):
        replay = ReplayController.from_training_pool(replay_config, pool.categorical, pool.numerical, seed=5,
                                                     vocab_sizes=[f.vocab_size for f in spec.categorical])
        return build_codistiller(tiny_model(4, seed=teacher_seed), tiny_model(6, seed=student_seed, dropout=0.3),
                                 config, replay=replay, replay_pool=pool)

    reference = build()
    for chunk in chunks:
        reference.consume(chunk)
    ratios = {entry.ratio for entry in reference.replay.history}
    assert len(ratios) > 1 and reference.replay.shift is not None  # the rolling estimate moved the ratio
    expected = reference.finish()
    for cut in (7, 11):  # inside a τ-window (pending collaborative targets) and inside a rolling window
        first = build()
        for chunk in chunks[:cut]:
            first.consume(chunk)
        saved_extras = online_extras(first)
        state = tensor_bytes(portable_state(first.state_dict()))
        weights = tensor_bytes({"student": first.trainer.model.state_dict(), "teacher": first.teacher.model.state_dict()})
        assert first.teacher.pending and first.teacher._targets  # a τ-window with student targets is open
        torch.manual_seed(777)
        second = build(student_seed=8, teacher_seed=9)
        saved = load_tensor_bytes(weights, "weights")
        second.trainer.model.load_state_dict(saved["student"])
        second.teacher.model.load_state_dict(saved["teacher"])
        second.load_state_dict(restored_state(load_tensor_bytes(state, "state")))
        # the rolling estimate (windows, rows, Δ_shift, ratio) and the collaborative share are the saved ones
        assert online_extras(second) == saved_extras
        assert saved_extras["rolling_drift"]["rows"] == cut * 50 and saved_extras["rolling_drift"]["windows"] >= 2
        assert second.replay.history == first.replay.history
        assert second.teacher.rows_seen == first.teacher.rows_seen and second.teacher.pending == first.teacher.pending
        for chunk in chunks[cut:]:
            second.consume(chunk)
        result = second.finish()
        for ours, theirs in ((result.student, expected.student), (result.teacher, expected.teacher)):
            for name, value in theirs.state_dict().items():
                assert torch.equal(ours.state_dict()[name], value), (cut, name)
        assert result.teacher_update_steps == expected.teacher_update_steps
        assert result.collaboration_share == expected.collaboration_share
        assert (result.batches, result.rows, result.replay_rows) == (expected.batches, expected.rows, expected.replay_rows)
        assert second.replay.history == reference.replay.history


@pytest.mark.parametrize(("interval", "optimizer", "dropout"), [(3, "adam", 0.0), (1, "sgd", 0.3), (4, "adam", 0.3)])
def test_a_codistiller_resumed_from_its_saved_state_continues_bit_for_bit(interval: int, optimizer: str,
                                                                          dropout: float) -> None:
    stream, pool = tiny_clicks(900, seed=3), tiny_clicks(400, seed=4)
    config = OnlineCoDistillConfig(batch_size=50, teacher_update_interval=interval, teacher_optimizer=optimizer,
                                   num_threads=1, window_batches=4)
    chunks = [stream.slice(i, min(i + 50, len(stream))) for i in range(0, len(stream), 50)]

    def build(student_seed: int = 2, teacher_seed: int = 1):  # noqa: ANN202
        replay = ReplayController(ReplayConfig(max_ratio=0.3), len(pool), seed=5, initial_shift=0.0)
        return build_codistiller(tiny_model(4, seed=teacher_seed), tiny_model(6, seed=student_seed, dropout=dropout),
                                 config, replay=replay, replay_pool=pool)

    reference = build()
    for chunk in chunks:
        reference.consume(chunk)
    expected = reference.finish()
    for cut in (5, 7, 13):  # inside a τ-window, at its end, inside a prequential window
        first = build()
        for chunk in chunks[:cut]:
            first.consume(chunk)
        state = tensor_bytes(first.state_dict())
        weights = tensor_bytes({"student": first.trainer.model.state_dict(), "teacher": first.teacher.model.state_dict()})
        torch.manual_seed(777)
        second = build(student_seed=8, teacher_seed=9)
        saved = load_tensor_bytes(weights, "weights")
        second.trainer.model.load_state_dict(saved["student"])
        second.teacher.model.load_state_dict(saved["teacher"])
        second.load_state_dict(load_tensor_bytes(state, "state"))
        for chunk in chunks[cut:]:
            second.consume(chunk)
        result = second.finish()
        for ours, theirs in ((result.student, expected.student), (result.teacher, expected.teacher)):
            for name, value in theirs.state_dict().items():
                assert torch.equal(ours.state_dict()[name], value), (cut, name)
        assert result.teacher_update_steps == expected.teacher_update_steps
        assert (result.batches, result.rows, result.replay_rows) == (expected.batches, expected.rows, expected.replay_rows)
        assert [w.student_logloss for w in result.windows] == [w.student_logloss for w in expected.windows]


def test_stream_batches_run_across_partitions_and_resume_on_the_same_boundaries() -> None:
    """Batches of `size` rows cross partition boundaries like the in-process stream; resuming at any
    batch's end position forms exactly the rest of the uninterrupted run's batches."""
    import numpy as np

    from crossadapt.data.arrays import SplitArrays
    from services.common.storage.datasets import DatasetPosition
    from services.online_codistiller.pipeline import rebatch

    sizes = [7, 3, 12, 5]  # rows per partition
    labels = np.arange(sum(sizes), dtype=np.float32)
    edges = np.concatenate([[0], np.cumsum(sizes)])

    def reads(start: DatasetPosition | None = None, read_rows: int = 4):  # noqa: ANN202 - like DatasetStore.read
        for index, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
            name = f"p{index}"
            first = start.row if start is not None and start.partition == name else 0
            if start is not None and int(start.partition[1:]) > index:
                continue
            for row in range(first, hi - lo, read_rows):
                stop = min(row + read_rows, hi - lo)
                chunk = labels[lo + row: lo + stop]
                yield (SplitArrays(categorical=np.zeros((len(chunk), 1), np.int64), numerical=np.zeros((len(chunk), 0),
                                   np.float32), label=chunk), DatasetPosition(partition=name, row=stop))

    batches = list(rebatch(reads(), 5))
    assert [len(b) for b, _, _ in batches] == [5, 5, 5, 5, 5, 2]
    assert np.array_equal(np.concatenate([b.label for b, _, _ in batches]), labels)  # nothing skipped or repeated
    assert batches[1][1] == DatasetPosition(partition="p1", row=3) and batches[1][2] == {"p0": 2, "p1": 3}
    assert batches[2][2] == {"p2": 5} and batches[-1][1] == DatasetPosition(partition="p3", row=5)
    for cut in range(1, len(batches)):
        resumed = list(rebatch(reads(batches[cut - 1][1]), 5))
        assert [b.label.tolist() for b, _, _ in resumed] == [b.label.tolist() for b, _, _ in batches[cut:]]


def test_kept_rows_are_batched_across_partitions_with_positions_in_stream_rows() -> None:
    """With `keep` (target 'conversion': the clicked rows) the rows are filtered before batching: batches of
    `size` kept rows, positions just after a batch's last kept stream row, rows per partition counting every
    stream row between two positions; resuming at any batch's position forms the rest of the batches."""
    import itertools

    import numpy as np

    from crossadapt.data.arrays import SplitArrays
    from services.common.storage.datasets import DatasetPosition
    from services.online_codistiller.pipeline import rebatch

    sizes = [7, 3, 12, 5]
    rows = np.arange(sum(sizes))
    clicked = (rows % 3 != 1).astype(np.float32)  # 0, 2, 3, 5, 6, 8, ... are kept
    clicked[[3, 5, 6]] = 0.0  # rows 3..6 of p0 left out: p0 keeps 0, 2 only
    edges = np.concatenate([[0], np.cumsum(sizes)])

    def reads(start: DatasetPosition | None = None, read_rows: int = 4):  # like DatasetStore.read
        for index, (lo, hi) in enumerate(itertools.pairwise(edges)):
            name = f"p{index}"
            if start is not None and int(start.partition[1:]) > index:
                continue
            first = start.row if start is not None and start.partition == name else 0
            for row in range(first, hi - lo, read_rows):
                stop = min(row + read_rows, hi - lo)
                ids = rows[lo + row: lo + stop]
                yield (SplitArrays(categorical=np.zeros((len(ids), 1), np.int64), numerical=np.zeros((len(ids), 0),
                                   np.float32), label=clicked[ids], conversion=ids.astype(np.float32)),
                       DatasetPosition(partition=name, row=stop))

    def keep(arrays: SplitArrays) -> np.ndarray:
        return np.flatnonzero(arrays.label > 0.5)

    batches = list(rebatch(reads(), 4, keep))
    kept = rows[clicked > 0.5]
    assert [b.conversion.tolist() for b, _, _ in batches] == [kept[i:i + 4].tolist() for i in range(0, len(kept), 4)]
    # [0 2 8 9] ends at stream row 9 = p1 row 2 (position: row 3); p0's left-out rows 3..6 count toward it
    assert batches[0][1] == DatasetPosition(partition="p1", row=3) and batches[0][2] == {"p0": 7, "p1": 3}
    assert batches[-1][1] == DatasetPosition(partition="p3", row=5)  # the last (short) batch: the stream's end
    totals: dict[str, int] = {}
    for _, _, counts in batches:
        for partition, count in counts.items():
            totals[partition] = totals.get(partition, 0) + count
    assert totals == {f"p{i}": size for i, size in enumerate(sizes)}
    for cut in range(1, len(batches)):
        resumed = list(rebatch(reads(batches[cut - 1][1]), 4, keep))
        assert [b.conversion.tolist() for b, _, _ in resumed] == [b.conversion.tolist() for b, _, _ in batches[cut:]]
        assert [p for _, p, _ in resumed] == [p for _, p, _ in batches[cut:]]


def test_a_checkpoint_is_due_after_every_batches_or_every_seconds_whichever_comes_first() -> None:
    from services.online_codistiller.pipeline import checkpoint_due

    assert not checkpoint_due(3, 10.0, every_batches=4, every_seconds=60.0)
    assert checkpoint_due(4, 10.0, every_batches=4, every_seconds=60.0)  # the batch cadence first
    assert checkpoint_due(1, 60.0, every_batches=100, every_seconds=60.0)  # the time cadence first
    assert checkpoint_due(7, 61.5, every_batches=4, every_seconds=60.0)
    assert not checkpoint_due(0, 1e6, every_batches=4, every_seconds=60.0)  # nothing trained since: nothing to save
    settings = CoDistillationSettings.from_proto(pb.CoDistillationConfig())
    assert (settings.checkpoint_every_batches, settings.checkpoint_every_seconds) == (None, 60.0)  # the clock only
    assert not checkpoint_due(10_000, 59.9, every_batches=None, every_seconds=60.0)
    assert checkpoint_due(1, 60.0, every_batches=None, every_seconds=60.0)
    assert CoDistillationSettings.from_proto(
        pb.CoDistillationConfig(checkpoint_every_seconds=0.5)).checkpoint_every_seconds == 0.5
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(InvalidArgumentError) as error:
            CoDistillationSettings.from_proto(pb.CoDistillationConfig(checkpoint_every_seconds=bad))
        assert error.value.field == "config.checkpoint_every_seconds"


def test_adaptive_lambdas_trace_goes_into_the_operations_details() -> None:
    """With config.adaptive the checkpoint's details say why λ moved, as the offline distiller's do: λ and the
    replay scale now, and the newest updates' [batch, gap, λ] (the manifest keeps the whole trace)."""
    from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
    from services.online_codistiller.pipeline import TRACE_ENTRIES, adaptive_details

    stream = tiny_clicks(4000, seed=3)
    config = OnlineCoDistillConfig(batch_size=50, num_threads=1, adaptive=AdaptiveKDConfig(
        gap_onset=0.0, online={"warmup": 0, "ema_window": 5}))
    fixed = build_codistiller(tiny_model(4, seed=1), tiny_model(6, seed=2), config.model_copy(update={"adaptive": None}))
    assert adaptive_details(fixed) is None
    distiller = build_codistiller(tiny_model(4, seed=1), tiny_model(6, seed=2), config)
    distiller.consume(stream)
    details = adaptive_details(distiller)
    history = distiller.controller.history
    assert details["observations"] == len(history) == 80 > TRACE_ENTRIES
    assert len(details["trace"]) == TRACE_ENTRIES and details["trace"][-1][0] == history[-1][0]
    assert details["lambda"] == round(distiller.trainer.kd_weight, 4) == details["trace"][-1][2]
