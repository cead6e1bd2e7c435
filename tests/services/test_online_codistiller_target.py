"""The co-distiller's pipeline trains what the in-process online stage trains (#11), on a local store.

* target 'conversion': the service keeps the stream's clicked rows BEFORE cutting batches, as the core's
  `CoDistiller.consume` does over the whole online split, so its batches are the in-process ones, across
  partition boundaries; a run resumed from any batch's position forms the rest of them; positions count
  stream rows (a batch ends just after its last clicked row);
* the whole run (stream through checkpoints, replay, teacher τ-steps) ends bit-for-bit at the student the
  core's `codistill_online` trains on the same models and stream, for both KD gates and both targets; a run
  stopped after a checkpoint with target 'conversion' resumes to that same student;
* kd_gate: unset is the switch's default 'teacher_better'; a bad value, or target 'conversion' on a stream
  without a conversion column, is INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from distiller_fixtures import EPOCH, TINY_SPEC, VOCAB_HASH, tiny_clicks, tiny_model

from crossadapt.data import iter_batches
from crossadapt.training import select_target_rows
from crossadapt.transfer.online.codistillation import codistill_online
from services.common.errors import InvalidArgumentError
from services.common.model_io import load_model, publish_model, read_all, write_split
from services.common.operations import FileOperationStore
from services.common.proto import common_pb2
from services.common.proto import online_codistiller_pb2 as pb
from services.common.storage import CheckpointStore, DatasetStore, LocalObjectStore
from services.common.storage.datasets import DatasetPosition
from services.online_codistiller import pipeline
from services.online_codistiller.config import CoDistillationSettings
from services.online_codistiller.pipeline import (
    CoDistillerContext,
    run_codistillation,
    start_run,
)
from services.online_codistiller.plan import plan_codistillation

ROWS, PARTITIONS, BATCH = 900, 4, 32


class Stop(Exception):
    """Stands for the worker lost after a checkpoint."""


def conversions(rows, seed: int):
    """`rows` with a conversion column: about a third of the clicks convert, no unclicked row does."""
    rng = np.random.default_rng(seed)
    return replace(rows, conversion=(rows.label * (rng.random(len(rows)) < 0.35)).astype(np.float32))


@pytest.fixture
def world(tmp_path):
    objects = LocalObjectStore(tmp_path / "store")
    ctx = CoDistillerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                             operations=FileOperationStore(tmp_path / "ops"))
    for name, model in (("m/student", tiny_model(6, seed=2)), ("m/teacher", tiny_model(4, seed=1))):
        publish_model(ctx.checkpoints, name, model, feature_spec=TINY_SPEC, vocab_hash=VOCAB_HASH)
    write_split(ctx.datasets, "stream", conversions(tiny_clicks(ROWS, seed=7), seed=8), TINY_SPEC,
                vocab_hash=VOCAB_HASH, partitions=PARTITIONS, start=EPOCH)
    write_split(ctx.datasets, "replay", conversions(tiny_clicks(400, seed=9), seed=10), TINY_SPEC,
                vocab_hash=VOCAB_HASH, start=EPOCH)
    write_split(ctx.datasets, "clicks-only", tiny_clicks(100, seed=11), TINY_SPEC, vocab_hash=VOCAB_HASH,
                start=EPOCH)
    return ctx


def _plan(ctx: CoDistillerContext, operation_id: str, stream: str = "stream", **config):
    request = pb.StartCoDistillationRequest(
        student=common_pb2.CheckpointRef(name="m/student"), teacher=common_pb2.CheckpointRef(name="m/teacher"),
        stream=common_pb2.DatasetRef(name=stream), replay=common_pb2.DatasetRef(name="replay"),
        student_name=f"{operation_id}/student", teacher_name=f"{operation_id}/teacher",
        config=pb.CoDistillationConfig(**{
            "batch_size": BATCH, "checkpoint_every_batches": 4, "teacher_update_interval": 3, "seed": 3,
            "window_batches": 2, "drift": pb.CoDistillationDriftSettings(max_replay=0.3, windows=4, bins=8),
            **config}))
    return plan_codistillation(ctx.checkpoints, ctx.datasets, request, operation_id)


def _equal_models(ours: torch.nn.Module, theirs: torch.nn.Module) -> None:
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_kd_gate_defaults_to_the_switchs_and_bad_values_name_their_field(world) -> None:
    default = CoDistillationSettings.from_proto(pb.CoDistillationConfig())
    assert default.core_config("cpu").kd_gate == "teacher_better"  # crossadapt switch's offline.distillation.kd_gate
    chosen = CoDistillationSettings.from_proto(pb.CoDistillationConfig(kd_gate="all", target="conversion"))
    assert (chosen.core_config("cpu").kd_gate, chosen.core_config("cpu").target) == ("all", "conversion")
    for bad, field in (({"kd_gate": "some"}, "config.kd_gate"), ({"target": "purchase"}, "config.target")):
        with pytest.raises(InvalidArgumentError) as error:
            CoDistillationSettings.from_proto(pb.CoDistillationConfig(**bad))
        assert error.value.field == field
    with pytest.raises(InvalidArgumentError) as error:  # at Start: no conversion label to fit
        _plan(world, "op-x", stream="clicks-only", target="conversion")
    assert error.value.field == "config.target" and "clicks-only" in error.value.message
    assert _plan(world, "op-y", stream="clicks-only").settings.target == "click"


def test_conversion_batches_are_the_in_process_ones_and_a_resume_forms_the_rest(world) -> None:
    plan = _plan(world, "op-b", target="conversion")
    run = start_run(world, plan, lambda *_, **__: None, None)
    batches = list(run.batches())
    stream = read_all(world.datasets, "stream", TINY_SPEC)
    expected = list(iter_batches(select_target_rows(stream, "conversion"), BATCH, shuffle=False))
    assert len(batches) == len(expected) > 2 * PARTITIONS  # several batches cross partition boundaries
    for (ours, _, _), theirs in zip(batches, expected, strict=True):
        ours = ours.to_batch()
        for column in ("categorical", "numerical", "label", "conversion", "timestamp"):
            assert torch.equal(getattr(ours, column), getattr(theirs, column)), column
    # Positions count stream rows: a batch ends just after its last (clicked) row, the last batch at the
    # stream's end; the rows per partition between two positions cover every stream row once.
    partitions = world.datasets.partitions("stream")
    per_partition = ROWS // PARTITIONS
    for ours, position, _ in batches[:-1]:
        last = int(ours.timestamp[-1])  # tiny_clicks' timestamp is the stream row
        assert position == DatasetPosition(partition=partitions[last // per_partition], row=last % per_partition + 1)
    assert batches[-1][1] == DatasetPosition(partition=partitions[-1], row=per_partition)  # the stream's end
    counted: dict[str, int] = {}
    for _, _, counts in batches:
        for partition, rows in counts.items():
            counted[partition] = counted.get(partition, 0) + rows
    assert counted == {p: per_partition for p in partitions}
    for cut in (1, 5, len(batches) - 1):  # resumed at a batch's end position, as a checkpoint saves it
        run.position = batches[cut - 1][1]
        resumed = list(run.batches())
        assert [b.timestamp.tolist() for b, _, _ in resumed] == [b.timestamp.tolist() for b, _, _ in batches[cut:]]
        assert [p for _, p, _ in resumed] == [p for _, p, _ in batches[cut:]]


@pytest.mark.parametrize(("target", "kd_gate"), [("conversion", None), ("conversion", "all"), ("click", None)])
def test_the_service_trains_the_in_process_student(world, target: str, kd_gate: str | None) -> None:
    """run_codistillation ends at the student (and teacher) the core's codistill_online trains from the same
    checkpoints over the whole stream with the same replay pool and the plan's core config."""
    gate = {} if kd_gate is None else {"kd_gate": kd_gate}
    plan = _plan(world, f"op-{target}-{kd_gate}", target=target, **gate)
    reports: list[dict] = []
    began = time.perf_counter()
    final = run_codistillation(world, plan, lambda *_, details=None, **__: reports.append(details or {}))
    elapsed = time.perf_counter() - began
    # Where the task's time went, in the last checkpoint's details: every part measured, none beyond the run.
    seconds = [d["seconds"] for d in reports if "seconds" in d][-1]
    assert set(seconds) == {"start", "read", "train", "checkpoint"} and all(v > 0 for v in seconds.values())
    # Each part is reported rounded to the millisecond, so the sum may pass the run's wall time by half a ms a part.
    assert sum(seconds.values()) <= elapsed + 0.0005 * len(seconds)
    assert [d for d in reports if "seconds" in d][-1]["student"] == final.ref
    config = plan.settings.core_config("cpu")
    assert config.kd_gate == (kd_gate or "teacher_better")
    student, _ = load_model(world.checkpoints, plan.student.name, plan.student.version)
    teacher, _ = load_model(world.checkpoints, plan.teacher.name, plan.teacher.version)
    controller, pool = pipeline._replay(world, plan)
    expected = codistill_online(teacher, student, read_all(world.datasets, "stream", TINY_SPEC), config,
                                replay=controller, replay_pool=pool)
    ours, _ = load_model(world.checkpoints, final.name, final.version)
    _equal_models(ours, expected.student)
    extra = final.manifest.extra
    assert (extra["batches"], extra["rows"]) == (expected.batches, expected.rows)
    co_teacher, _ = load_model(world.checkpoints, *extra["teacher"].rsplit("/", 1))
    _equal_models(co_teacher, expected.teacher)


def test_a_conversion_run_stopped_after_a_checkpoint_resumes_to_the_uninterrupted_student(world) -> None:
    uninterrupted = run_codistillation(world, _plan(world, "op-a", target="conversion", checkpoint_every_batches=3),
                                       lambda *_, **__: None)
    seen: list[str] = []

    def stop_after_second_checkpoint(*_, details=None, **__) -> None:
        if details and "student" in details and "rows_by_partition" in details:
            seen.append(details["student"])
            if len(seen) == 2:
                raise Stop

    plan = _plan(world, "op-r", target="conversion", checkpoint_every_batches=3)
    with pytest.raises(Stop):
        run_codistillation(world, plan, stop_after_second_checkpoint)
    stopped_at = world.checkpoints.resolve(*seen[-1].rsplit("/", 1))
    assert 0 < stopped_at.manifest.extra["position"]["row"] < ROWS // PARTITIONS  # mid-partition
    torch.manual_seed(1234)  # the resumed run owes nothing to the process's RNG
    resumed = run_codistillation(world, plan, lambda *_, **__: None)
    assert resumed.manifest.extra["rows_by_partition"] == uninterrupted.manifest.extra["rows_by_partition"]
    assert resumed.manifest.extra["rows"] == uninterrupted.manifest.extra["rows"]
    ours, _ = load_model(world.checkpoints, resumed.name, resumed.version)
    theirs, _ = load_model(world.checkpoints, uninterrupted.name, uninterrupted.version)
    _equal_models(ours, theirs)
