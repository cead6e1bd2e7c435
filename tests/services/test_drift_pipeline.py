"""The drift steps in-process (no Celery): the same numbers as the core for the same rows; bad input named."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from crossadapt.data import SplitArrays
from crossadapt.transfer.drift.detector import DriftConfig, measure_drift
from crossadapt.transfer.online.replay import ReplayConfig, ReplayController
from sampler_drift_fixtures import TINY_SPEC, local_objects, put_dataset, tiny_clicks  # noqa: F401
from services.common.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, PlatformError
from services.common.model_io import split_table
from services.common.operations import FileOperationStore
from services.common.storage import DatasetStore, ObjectStore
from services.drift_detector import pipeline
from services.drift_detector.live import LiveDrift, pack_state, unpack_state
from services.drift_detector.pipeline import DriftContext

NAMES = ["user_id", "item_id", "price"]
VOCAB = [30, 12]
REFERENCE = tiny_clicks(2_400, seed=11)
STREAM = tiny_clicks(3_000, seed=12, shift=0.6)


@pytest.fixture
def ctx(local_objects: ObjectStore, tmp_path: Path) -> DriftContext:  # noqa: F811
    put_dataset(local_objects, "reference", REFERENCE, partitions=3)
    put_dataset(local_objects, "stream", STREAM, partitions=4)
    return DriftContext(DatasetStore(local_objects), FileOperationStore(tmp_path / "ops"))


def _run(ctx: DriftContext, stream: str = "stream", **config) -> dict:  # noqa: ANN003
    settings = pipeline.drift_settings(config)
    plan = pipeline.plan_drift(ctx.datasets, operation_id="op", reference="reference", stream=stream,
                               settings=settings)
    fitted = pipeline.fit(ctx, plan)
    for w in range(settings.drift.windows):
        pipeline.count_window(ctx, plan, "reference", w, lambda _: None)
    for w in range(fitted.stream_windows):
        pipeline.count_window(ctx, plan, "stream", w, lambda _: None)
    details = pipeline.reduce(ctx, plan)
    pipeline.cleanup(ctx, plan)
    assert ctx.datasets.objects.list_keys("operations/op") == []
    return details


def _core_controller(config: dict, window_rows: int) -> ReplayController:
    settings = pipeline.drift_settings(config)
    replay = settings.replay.model_copy(update={"window_rows": window_rows})
    return ReplayController.from_training_pool(replay, REFERENCE.categorical, REFERENCE.numerical,
                                               feature_names=NAMES, vocab_sizes=VOCAB)


def _feed(controller: ReplayController, arrays: SplitArrays, batch: int = 97) -> None:
    for start in range(0, len(arrays), batch):
        part = arrays.slice(start, min(start + batch, len(arrays)))
        controller.observe(part.categorical, part.numerical)


def _close(actual: list[float], expected: list[float]) -> None:
    np.testing.assert_allclose(actual, expected, rtol=1e-12, atol=1e-15)


CONFIGS = [
    {"windows": 4},
    {"windows": 5, "metric": "kl", "bins": 8, "low": 0.001, "high": 0.02, "max_replay": 0.3},
    {"windows": 3, "metric": "wasserstein", "binning": "range", "window_rows": "450"},
    {"windows": 4, "noise_floor": "none", "window_rows": "333"},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_the_service_gives_the_cores_numbers(ctx: DriftContext, config: dict) -> None:
    details = _run(ctx, **config)
    window_rows = int(config.get("window_rows", 0)) or len(STREAM) // config["windows"]
    controller = _core_controller(config, window_rows)
    initial = controller.initial_report
    reference = details["reference"]
    assert reference["report"]["shift"] == pytest.approx(initial.shift, rel=1e-12, abs=1e-15)
    assert reference["replay_ratio"] == pytest.approx(controller.ratio, rel=1e-12, abs=1e-15)
    for got, want in zip(reference["report"]["per_feature"], initial.per_feature, strict=True):
        assert got["name"] == want.name
        _close(got["per_pair"], want.per_pair)
        _close(got["raw_per_pair"], want.raw_per_pair)
    _feed(controller, STREAM)
    history = {entry.windows: entry for entry in controller.history if entry.reason == "window"}
    stream = details["stream"]
    assert stream["windows"] == len(STREAM) // window_rows and stream["window_rows"] == window_rows
    assert stream["per_window"][0]["shift"] is None  # the first window is only a reference
    assert stream["per_window"][0]["replay_ratio"] == pytest.approx(controller.history[0].ratio)
    for entry in stream["per_window"][1:]:
        core = history[entry["window"] + 1]
        assert entry["shift"] == pytest.approx(core.shift, rel=1e-12, abs=1e-15)
        assert entry["replay_ratio"] == pytest.approx(core.ratio, rel=1e-12, abs=1e-15)
        assert set(entry["divergence"]) == set(NAMES)
    rolling = controller.rolling_report()
    assert stream["shift"] == pytest.approx(rolling.shift, rel=1e-12, abs=1e-15) == pytest.approx(controller.shift)
    assert details["replay_ratio"] == pytest.approx(controller.ratio, rel=1e-12, abs=1e-15)
    for got, want in zip(stream["report"]["per_feature"], rolling.per_feature, strict=True):
        assert got["name"] == want.name
        _close(got["per_pair"], want.per_pair)
    # The stream's last pair, feature by feature, is the last column of the rolling report.
    last = stream["per_window"][-1]["divergence"]
    for feature in rolling.per_feature:
        assert last[feature.name] == pytest.approx(feature.per_pair[-1], rel=1e-12, abs=1e-15)


def test_auto_windows_make_the_stream_report_measure_drift_on_the_reference_bins(ctx: DriftContext) -> None:
    details = _run(ctx, windows=4)
    controller = _core_controller({"windows": 4}, len(STREAM) // 4)
    whole = measure_drift(STREAM.categorical, STREAM.numerical, DriftConfig(windows=4), binner=controller.binner)
    assert details["stream"]["shift"] == pytest.approx(whole.shift, rel=1e-12)
    assert details["stream"]["shift"] > details["reference"]["shift"]  # the planted shift is seen


def test_reference_only(ctx: DriftContext) -> None:
    details = _run(ctx, stream="", windows=6)
    controller = _core_controller({"windows": 6}, 2)
    assert "stream" not in details and details["source"] == "reference"
    assert details["shift"] == pytest.approx(controller.initial_report.shift, rel=1e-12)


def _error(call) -> tuple[str, str | None]:  # noqa: ANN001
    with pytest.raises(PlatformError) as caught:
        call()
    return type(caught.value).__name__, caught.value.field


def test_bad_requests_are_refused_at_start(ctx: DriftContext, local_objects: ObjectStore) -> None:  # noqa: F811
    for config, field in [({"metric": "l2"}, "config.metric"), ({"windows": 1}, "config.windows"),
                          ({"bins": -3}, "config.bins"), ({"low": 0.2, "high": 0.1}, "config.high"),
                          ({"window_rows": "-5"}, "config.window_rows"), ({"noise_floor": "some"}, "config.noise_floor"),
                          ({"max_replay": -1.0}, "config.max_replay"), ({"windows": 10 ** 6}, "config.windows"),
                          ({"high": float("nan")}, "config.high")]:
        assert _error(lambda config=config: pipeline.drift_settings(config)) == ("InvalidArgumentError", field), config
    settings = pipeline.drift_settings({})

    def plan(reference: str = "reference", stream: str = "stream", **kwargs):  # noqa: ANN003, ANN202
        return lambda: pipeline.plan_drift(ctx.datasets, operation_id="op", reference=reference, stream=stream,
                                           settings=settings, **kwargs)

    assert _error(plan(reference="nope")) == ("NotFoundError", "reference")
    assert _error(plan(stream="nope")) == ("NotFoundError", "stream")
    assert _error(plan(reference="bad name!")) == ("InvalidArgumentError", "reference.name")
    assert _error(plan(positions=(False, True))) == ("InvalidArgumentError", "stream.position")
    put_dataset(local_objects, "other-vocab", STREAM, partitions=1, vocab_hash="c" * 64)
    assert _error(plan(stream="other-vocab")) == ("InvalidArgumentError", "stream")
    from crossadapt.models.spec import FeatureSpec

    narrow = FeatureSpec(categorical=TINY_SPEC.categorical, numerical=())
    DatasetStore(local_objects).write_partition("narrow", datetime(2026, 1, 1, tzinfo=timezone.utc), split_table(
        SplitArrays(categorical=STREAM.categorical, numerical=STREAM.numerical[:, :0], label=STREAM.label), narrow))
    assert _error(plan(stream="narrow")) == ("InvalidArgumentError", "stream")


def test_bad_data_found_later_fails_naming_it(ctx: DriftContext, local_objects: ObjectStore) -> None:  # noqa: F811
    put_dataset(local_objects, "small", tiny_clicks(15), partitions=1)
    plan = pipeline.plan_drift(ctx.datasets, operation_id="small", reference="small", stream="",
                               settings=pipeline.drift_settings({"windows": 10}))
    assert _error(lambda: pipeline.fit(ctx, plan)) == ("InvalidArgumentError", "config.windows")
    bad = tiny_clicks(600, seed=3)
    bad.numerical[400, 0] = np.inf
    put_dataset(local_objects, "inf", bad, partitions=2)
    plan = pipeline.plan_drift(ctx.datasets, operation_id="inf", reference="inf", stream="",
                               settings=pipeline.drift_settings({"windows": 3}))
    with pytest.raises(InvalidArgumentError, match="price"):
        pipeline.fit(ctx, plan)
    stream_plan = pipeline.plan_drift(ctx.datasets, operation_id="mixed", reference="reference", stream="stream",
                                      settings=pipeline.drift_settings({"windows": 3}))
    narrow = tiny_clicks(50)
    from crossadapt.models.spec import FeatureSpec

    spec = FeatureSpec(categorical=TINY_SPEC.categorical, numerical=())
    ctx.datasets.write_partition("stream", datetime(2027, 1, 1, tzinfo=timezone.utc), split_table(
        SplitArrays(categorical=narrow.categorical, numerical=narrow.numerical[:, :0], label=narrow.label), spec))
    with pytest.raises(InvalidArgumentError, match="stream/ts=20270101T000000Z"):
        pipeline.fit(ctx, stream_plan)


# ---- live states -------------------------------------------------------------------------------------
@pytest.fixture
def live(ctx: DriftContext, tmp_path: Path) -> LiveDrift:
    from contextlib import nullcontext

    return LiveDrift(ctx.datasets, lambda name: nullcontext())


def test_live_state_follows_the_core_rolling_controller(live: LiveDrift, ctx: DriftContext) -> None:
    config = {"windows": 4, "window_rows": "400", "metric": "js"}
    settings = pipeline.drift_settings(config)
    partitions = ctx.datasets.partitions("stream")
    head = live.update("prod/ctr", "stream", partitions[0], reference="reference", settings=settings)
    controller = _core_controller(config, 400)
    assert head.reference_report.shift == pytest.approx(controller.initial_report.shift, rel=1e-12)
    offsets = np.cumsum([0, *[len(p) for p in np.array_split(np.arange(len(STREAM)), 4)]])
    _feed(controller, STREAM.slice(0, int(offsets[1])))
    assert head.replay_ratio == pytest.approx(controller.ratio, rel=1e-12) and head.rows == offsets[1]
    for k, partition in enumerate(partitions[1:], start=1):
        head = live.update("prod/ctr", "stream", partition)
        _feed(controller, STREAM.slice(int(offsets[k]), int(offsets[k + 1])), batch=1000)
        assert head.replay_ratio == pytest.approx(controller.ratio, rel=1e-12, abs=1e-15)
        assert head.shift == pytest.approx(controller.shift, rel=1e-12, abs=1e-15)
    rolling = controller.rolling_report()
    assert head.source == "stream" and head.windows == len(STREAM) // 400
    assert [f.name for f in head.features] == [f.name for f in rolling.per_feature]
    _close([f.mean for f in head.features], [f.mean for f in rolling.per_feature])
    assert live.get("prod/ctr") == head and live.names() == ["prod/ctr"]
    again = live.update("prod/ctr", "stream", partitions[2])  # fed already: unchanged
    assert again == head
    assert len(ctx.datasets.objects.list_keys("drift/live/prod/ctr")) == 2  # head + the latest state only


def test_live_state_refuses_what_it_cannot_take(live: LiveDrift, ctx: DriftContext) -> None:
    partitions = ctx.datasets.partitions("stream")
    with pytest.raises(NotFoundError) as caught:
        live.update("new", "stream", partitions[0])
    assert caught.value.field == "reference"
    with pytest.raises(NotFoundError):
        live.get("new")
    live.update("s", "stream", partitions[2], reference="reference")
    with pytest.raises(FailedPreconditionError) as older:
        live.update("s", "stream", partitions[1])
    assert older.value.field == "partition"
    assert _error(lambda: live.update("s", "stream", "ts=20990101T000000Z")) == ("NotFoundError", "partition")
    assert _error(lambda: live.update("s", "stream", "yesterday")) == ("InvalidArgumentError",
                                                                       "partition.position.partition")
    assert _error(lambda: live.update("s", "stream", partitions[3], reference="stream")) == (
        "InvalidArgumentError", "reference")
    assert _error(lambda: live.update("s", "stream", partitions[3], settings=pipeline.drift_settings(
        {"windows": 7}))) == ("InvalidArgumentError", "config")
    narrow = tiny_clicks(50)
    from crossadapt.models.spec import FeatureSpec

    spec = FeatureSpec(categorical=TINY_SPEC.categorical, numerical=())
    ctx.datasets.write_partition("stream", datetime(2027, 1, 1, tzinfo=timezone.utc), split_table(
        SplitArrays(categorical=narrow.categorical, numerical=narrow.numerical[:, :0], label=narrow.label), spec))
    with pytest.raises(InvalidArgumentError, match="stream/ts=20270101T000000Z"):
        live.update("s", "stream", "ts=20270101T000000Z")
    assert live.get("s").partitions == [f"stream/{partitions[2]}"]  # the refused ones left no trace


def test_controller_state_survives_the_round_trip() -> None:
    controller = _core_controller({"windows": 3}, 300)
    _feed(controller, STREAM.slice(0, 1000))
    state = controller.state_dict()
    restored = unpack_state(pack_state(state, 3))
    again = ReplayController(controller.config, controller.pool_size, initial_shift=0.0, binner=controller.binner)
    again.load_state_dict(restored)
    _feed(controller, STREAM.slice(1000, 2000))
    _feed(again, STREAM.slice(1000, 2000))
    assert again.ratio == controller.ratio and again.shift == controller.shift
    assert ReplayConfig  # imported for the type of controller.config
