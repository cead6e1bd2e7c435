"""The offline distiller with adaptive λ (the switch's adaptive_kd, #11), on a local store without the platform.

* Start: `config.adaptive` is validated as the core's AdaptiveKDConfig (a bad value is INVALID_ARGUMENT
  naming the field) and needs validation rows (INVALID_ARGUMENT naming `validation`).
* The task's training equals the core's `distill_offline` given the whole validation split and the teacher
  (the core's slice, scored by the teacher): bit-equal weights and the same λ trace.
* A task stopped after a work-in-progress checkpoint resumes (its controller state inside the run state)
  to the uninterrupted student, bit for bit.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from distiller_fixtures import (
    TINY_SPEC,
    project,
    publish_teacher,
    tiny_clicks,
    write_dataset,
)

from crossadapt.data.arrays import SplitArrays
from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
from crossadapt.transfer.offline.distillation import (
    adaptive_valid_slice,
    distill_offline,
)
from services.common.errors import InvalidArgumentError
from services.common.model_io import load_model, read_all, read_recent
from services.common.operations import FileOperationStore
from services.common.proto import common_pb2, offline_distiller_pb2
from services.common.storage import CheckpointStore, DatasetStore, LocalObjectStore
from services.offline_distiller import pipeline
from services.offline_distiller.config import DistillationSettings
from services.offline_distiller.context import DistillerContext
from services.offline_distiller.plan import plan_distillation

# λ moves within a few checks: the onset at no gap, two steps between checks, at most 100 validation rows
ADAPTIVE = common_pb2.AdaptiveKD(gap_onset=0.0, gap_saturation=0.01, offline_eval_every_steps=2,
                                 offline_valid_rows=100, offline=common_pb2.AdaptiveSchedule(warmup=0, ema_window=2,
                                                                                              max_change=0.2))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("adaptive")
    objects = LocalObjectStore(root / "store")
    checkpoints, datasets = CheckpointStore(objects), DatasetStore(objects)
    operations = FileOperationStore(root / "ops")
    teacher = publish_teacher(checkpoints, "ctr/teacher", train_rows=600)
    projected = project(checkpoints, operations, teacher, "ctr/projected", width=6)
    sample, valid = tiny_clicks(500, seed=11), tiny_clicks(300, seed=12)
    write_dataset(datasets, "ctr/sample", sample, partitions=2)
    write_dataset(datasets, "ctr/valid", valid, partitions=2)
    ctx = DistillerContext(checkpoints=checkpoints, datasets=datasets, operations=operations)
    return {"ctx": ctx, "teacher": teacher, "projected": projected, "sample": sample, "valid": valid}


def request(world: dict, *, validation: str | None = "ctr/valid", **config):
    return offline_distiller_pb2.StartDistillationRequest(
        student=common_pb2.CheckpointRef(name=world["projected"].name, version=world["projected"].version),
        teacher=common_pb2.CheckpointRef(name=world["teacher"].name), sample=common_pb2.DatasetRef(name="ctr/sample"),
        validation=common_pb2.DatasetRef(name=validation) if validation else None, student_name="ctr/student",
        student_model=offline_distiller_pb2.ModelSpec(architecture="mlp", hidden=[8]),
        config=offline_distiller_pb2.DistillationConfig(**{"batch_size": 50, "frozen_epochs": 1, "joint_epochs": 1,
                                                           "seed": 3, "adaptive": ADAPTIVE, **config}))


def plan_for(world: dict, operation_id: str = "op-1", **kwargs):
    ctx = world["ctx"]
    return plan_distillation(ctx.checkpoints, ctx.datasets, request(world, **kwargs), operation_id)


def test_start_validates_adaptive_and_requires_validation_rows(world: dict) -> None:
    settings = DistillationSettings.from_proto(offline_distiller_pb2.DistillationConfig(adaptive=common_pb2.AdaptiveKD()))
    assert settings.adaptive == AdaptiveKDConfig()  # an empty message: the core's defaults (`adaptive_kd: {}`)
    assert DistillationSettings.from_proto(offline_distiller_pb2.DistillationConfig()).adaptive is None
    plan = plan_for(world)
    assert plan.settings.adaptive.offline_eval_every_steps == 2 and plan.settings.adaptive.offline.warmup == 0
    assert plan.validation == "ctr/valid" and plan.validation_needs_teacher_logits
    assert pipeline.core_config(plan, "cpu").adaptive == plan.settings.adaptive
    bad = [
        (common_pb2.AdaptiveKD(gap_onset=0.05, gap_saturation=0.01), "config.adaptive"),
        (common_pb2.AdaptiveKD(lambda_floor=-0.1), "config.adaptive.lambda_floor"),
        (common_pb2.AdaptiveKD(replay_floor=float("nan")), "config.adaptive.replay_floor"),
        (common_pb2.AdaptiveKD(offline_eval_every_steps=0), "config.adaptive.offline_eval_every_steps"),
        (common_pb2.AdaptiveKD(online=common_pb2.AdaptiveSchedule(ema_window=0)), "config.adaptive.online.ema_window"),
        (common_pb2.AdaptiveKD(offline=common_pb2.AdaptiveSchedule(max_change=0)), "config.adaptive.offline.max_change"),
    ]
    for adaptive, field in bad:
        with pytest.raises(InvalidArgumentError) as error:
            plan_for(world, adaptive=adaptive)
        assert error.value.field == field, (adaptive, error.value)
    with pytest.raises(InvalidArgumentError) as error:  # adaptive λ without validation rows
        plan_for(world, validation=None)
    assert error.value.field == "validation" and "adaptive" in error.value.message
    with pytest.raises(InvalidArgumentError) as error:  # a pCVR run's validation rows need conversions
        plan_for(world, target="conversion")
    assert error.value.field in ("config.target", "validation")


def test_the_tasks_adaptive_run_is_the_cores_and_resumes_bit_for_bit(world: dict) -> None:
    ctx = world["ctx"]
    plan = plan_for(world, operation_id="op-parity")
    inputs = pipeline.load_inputs(ctx, plan)
    assert len(inputs.valid) == 100 and inputs.valid.teacher_logit is not None  # the slice, scored once
    _, service = pipeline.train(plan, inputs, None)
    assert service.kd_weight_trace and min(w for _, _, w in service.kd_weight_trace) < 0.7  # λ moved

    # In process: the core given the whole validation split and the teacher (it slices and scores itself)
    teacher, _ = load_model(ctx.checkpoints, world["teacher"].name, world["teacher"].version)
    student, _ = pipeline.initial_student(ctx.checkpoints, plan, world["sample"])
    core = distill_offline(student, world["sample"], pipeline.core_config(plan, "cpu"), teacher=teacher,
                           valid=world["valid"])
    for name, value in core.student.state_dict().items():
        assert torch.equal(service.student.state_dict()[name], value), name
    assert service.kd_weight_trace == core.kd_weight_trace

    # Stopped after a work-in-progress checkpoint (every 3 steps), then resumed from it as a redelivery is
    stopped = plan_for(world, operation_id="op-stopped", checkpoint_every_steps=3)
    checkpointer = pipeline.Checkpointer(ctx, stopped, lambda *_, **__: None, {})

    def die_after_step_8(run, event):
        checkpointer(run, event)
        if run.cursor.steps == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pipeline.train(stopped, pipeline.load_inputs(ctx, stopped), die_after_step_8)
    again = pipeline.load_inputs(ctx, stopped)
    assert again.resumed_from and again.state["cursor"]["steps"] == 6 and "adaptive" in again.state
    _, resumed = pipeline.train(stopped, again, None)
    for name, value in service.student.state_dict().items():
        assert torch.equal(resumed.student.state_dict()[name], value), name
    assert resumed.kd_weight_trace == service.kd_weight_trace
    assert TINY_SPEC == plan.feature_spec


def test_only_the_validation_tail_is_read_and_its_rows_and_trace_are_the_whole_splits(world: dict) -> None:
    """Six partitions of 50 rows, 100 rows measured: the two newest are read, the four before never are
    (corrupted here, and the reads counted); the rows, λ trace and student equal the whole split's."""
    ctx = world["ctx"]
    valid = tiny_clicks(300, seed=13)
    partitions = write_dataset(ctx.datasets, "ctr/valid-long", valid, partitions=6)
    plan = plan_for(world, operation_id="op-tail", validation="ctr/valid-long")
    whole = adaptive_valid_slice(read_all(ctx.datasets, "ctr/valid-long", plan.feature_spec),
                                 pipeline.core_config(plan, "cpu"))
    for partition in partitions[:4]:  # an old partition that were read would fail the task now
        ctx.datasets.objects.put_bytes(ctx.datasets._key("ctr/valid-long", partition), b"not parquet")
    read: list[str] = []
    original = ctx.datasets.read_partition

    def counting(dataset, partition, *args, **kwargs):
        if dataset == "ctr/valid-long":
            read.append(partition)
        return original(dataset, partition, *args, **kwargs)

    ctx.datasets.read_partition = counting
    try:
        inputs = pipeline.load_inputs(ctx, plan)
    finally:
        del ctx.datasets.read_partition
    assert read == partitions[:3:-1]  # newest first, two of six
    assert len(inputs.valid) == 100 and np.array_equal(inputs.valid.timestamp, whole.timestamp)
    assert np.array_equal(inputs.valid.categorical, whole.categorical)
    _, service = pipeline.train(plan, inputs, None)

    teacher, _ = load_model(ctx.checkpoints, world["teacher"].name, world["teacher"].version)
    student, _ = pipeline.initial_student(ctx.checkpoints, plan, world["sample"])
    core = distill_offline(student, world["sample"], pipeline.core_config(plan, "cpu"), teacher=teacher, valid=valid)
    assert service.kd_weight_trace == core.kd_weight_trace and len(core.kd_weight_trace) > 3
    for name, value in core.student.state_dict().items():
        assert torch.equal(service.student.state_dict()[name], value), name


def test_a_pcvr_tail_counts_clicked_rows() -> None:
    """target conversion: λ measures clicked rows only, so the tail reaches back until it holds enough of them."""
    clicks = tiny_clicks(400, seed=14)
    rows = SplitArrays(**{**{f: getattr(clicks, f) for f in ("categorical", "numerical", "label", "timestamp")},
                          "conversion": (clicks.prob > 0.6).astype(np.float32) * clicks.label})
    datasets = DatasetStore(LocalObjectStore(Path(tempfile.mkdtemp(prefix="tail-"))))
    write_dataset(datasets, "ctr/valid-cvr", rows, partitions=8)
    clicked = int(rows.label[-150:].sum())  # the last three partitions' clicks
    from crossadapt.training import select_target_rows

    def count(part: SplitArrays) -> int:
        return len(select_target_rows(part, "conversion"))

    for need in (1, clicked, clicked + 1, 10_000):
        tail = read_recent(datasets, "ctr/valid-cvr", TINY_SPEC, need, count)
        whole = select_target_rows(read_all(datasets, "ctr/valid-cvr", TINY_SPEC), "conversion")
        picked = select_target_rows(tail, "conversion")
        keep = min(need, len(whole))
        assert count(tail) >= keep and len(tail) % 50 == 0  # whole partitions
        assert np.array_equal(picked.timestamp[-keep:], whole.timestamp[-keep:]), need
    assert len(read_recent(datasets, "ctr/valid-cvr", TINY_SPEC, clicked, count)) == 150


def test_the_lambda_trace_is_in_the_operations_details(world: dict) -> None:
    """The task's reports carry λ's trace (step, gap, λ), so a caller sees why λ moved; compact and JSON."""
    ctx = world["ctx"]
    plan = plan_for(world, operation_id="op-details")
    plan = plan.model_copy(update={"student_version": ctx.checkpoints.claim_version(plan.student_name,
                                                                                   owner="op-details")})
    reports: list[dict] = []
    pipeline.run_distillation(ctx, plan, lambda fraction, **kw: reports.append(kw.get("details") or {}))
    epochs = [d["adaptive"] for d in reports if "adaptive" in d]
    assert len(epochs) >= 3  # each epoch end (2) and the final report
    final = epochs[-1]
    published = ctx.checkpoints.resolve(plan.student_name, plan.student_version)
    trace = published.manifest.extra["kd_weight_trace"]
    assert final["evaluations"] == len(trace) and final["valid_rows"] == 100 and final["every_steps"] == 2
    assert final["trace"] == [[s, round(g, 5), round(w, 4)] for s, g, w in trace[-pipeline.TRACE_ENTRIES:]]
    assert final["lambda"] == round(trace[-1][2], 4) and final["teacher_valid_logloss"] > 0
    assert epochs[0]["evaluations"] < final["evaluations"]
    assert json.loads(json.dumps(final)) == final
    assert [r["kd_weight_end"] for r in reports[-1]["history"]] == [
        p["kd_weight_end"] for p in published.manifest.extra["phases"]]
