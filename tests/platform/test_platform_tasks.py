"""Task plumbing without a broker: the workflow's shape, the delivery limit, and failure handling."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest
from celery.exceptions import Ignore

from services.common.celery_app import create_celery_app
from services.common.errors import DataLossError, InternalError
from services.common.operations import FileOperationStore, OperationRecord, OperationState
from services.common.settings import PlatformSettings
from services.common.storage import CheckpointStore, LocalObjectStore
from services.projector import pipeline, tasks
from services.common.storage.tables import upload_table_checkpoint


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    settings = PlatformSettings(home=tmp_path, task_max_deliveries=2)
    store = CheckpointStore(LocalObjectStore(tmp_path / "store"))
    table = np.random.default_rng(0).standard_normal((900, 6)).astype(np.float32)
    upload_table_checkpoint(store, "t", {"a": table, "b": table[:300]}, num_shards=3)
    ctx = pipeline.ProjectorContext(store, FileOperationStore(tmp_path / "ops"))
    monkeypatch.setattr(tasks, "context", lambda: ctx)
    monkeypatch.setattr("services.common.task_steps.get_settings", lambda: settings)
    return settings, ctx


def _operation(ctx: pipeline.ProjectorContext, width: int) -> pipeline.ProjectionPlan:
    plan = pipeline.plan_projection(ctx.checkpoints, operation_id="op1", teacher_name="t", teacher_version="",
                                    student_name="s", width=width, seed=0, fields=["a"])
    plan = plan.model_copy(update={"student_version": ctx.checkpoints.claim_version("s", "op1")})
    ctx.operations.create(OperationRecord(id="op1", kind="projection", units=len(plan.units()),
                                          params={"plan": plan.model_dump(mode="json")}))
    return plan


def _task(retries: int = 0) -> types.SimpleNamespace:
    return types.SimpleNamespace(request=types.SimpleNamespace(retries=retries, hostname="w@h"))


@pytest.mark.parametrize(("width", "stats_tasks"), [(3, 3), (12, 0)])
def test_workflow_has_one_task_per_large_shard_and_deterministic_ids(setup, width: int, stats_tasks: int) -> None:  # noqa: ANN001
    settings, ctx = setup
    plan = _operation(ctx, width)
    _, ids = tasks.build_workflow(create_celery_app(settings), plan, task_rows=300)  # 300-row shards: one task each
    assert len(ids) == stats_tasks + 1 + 3 + 1  # stats (PCA only), fit, apply per shard, publish
    assert ids[-1] == "op1-publish" and "op1-apply-a-00002" in ids
    assert sum(i.startswith("op1-stats-") for i in ids) == stats_tasks
    assert len(plan.units()) == len(ids)
    _, packed = tasks.build_workflow(create_celery_app(settings), plan, task_rows=1000)  # all three in one task
    assert packed == [*(["op1-stats-group-00000"] if stats_tasks else []), "op1-fit", "op1-apply-group-00000",
                      "op1-publish"]


def test_small_shards_are_packed_and_large_ones_stay_alone() -> None:
    shards = [("a", 0, 600), ("a", 1, 600), ("b", 0, 50), ("c", 0, 2000), ("d", 0, 700), ("d", 1, 10)]
    assert tasks.group_shards(shards, 1000) == [[("a", 0)], [("c", 0)], [("a", 1), ("b", 0)], [("d", 0), ("d", 1)]]
    assert tasks.group_shards(shards, 1) == [[(f, i)] for f, i, _ in shards]
    packed = tasks.group_shards(shards, 10**6)
    assert packed == [[(f, i) for f, i, _ in shards]]


def test_a_task_that_keeps_losing_its_worker_fails_the_operation_with_a_reason(setup) -> None:  # noqa: ANN001
    _, ctx = setup
    _operation(ctx, 3)
    unit = "apply:a:00001"
    assert tasks.STEPS.start(_task(), "op1", unit, "apply").operation_id == "op1"
    assert ctx.operations.get("op1").state == OperationState.RUNNING and ctx.operations.get("op1").stage == "apply"
    assert tasks.STEPS.start(_task(retries=1), "op1", unit, "apply")  # a retry is not a lost delivery
    tasks.STEPS.start(_task(retries=1), "op1", unit, "apply")  # the retried message redelivered: 2nd delivery
    with pytest.raises(InternalError, match="delivered 3 times") as caught:
        tasks.STEPS.start(_task(retries=1), "op1", unit, "apply")
    tasks.ProjectorTask().on_failure(caught.value, "id", ("op1", "a", 1), {}, None)
    record = ctx.operations.get("op1")
    assert record.state == OperationState.FAILED and "worker process keeps dying" in record.error["message"]
    with pytest.raises(Ignore):  # later deliveries of the failed operation do nothing
        tasks.STEPS.start(_task(), "op1", "apply:a:00002", "apply")


def test_failures_keep_their_code_and_discard_written_shards(setup) -> None:  # noqa: ANN001
    _, ctx = setup
    plan = _operation(ctx, 12)
    pipeline.fit(ctx, plan)
    pipeline.apply_shard(ctx, plan, "a", 0, lambda _: None)
    assert any("tables/a" in k for k in ctx.checkpoints.objects.list_keys("checkpoints/s"))
    tasks.ProjectorTask().on_failure(DataLossError("bad", field="tables/a/shard-00001.safetensors"), "id",
                                     ("op1", "a", 1), {}, None)
    record = ctx.operations.get("op1")
    assert record.error["type"] == "DataLossError" and record.error["field"].endswith("00001.safetensors")
    assert all("/.claims/" in k for k in ctx.checkpoints.objects.list_keys("checkpoints/s"))
    assert ctx.checkpoints.objects.list_keys("operations/op1") == []
    other = pipeline.plan_projection(ctx.checkpoints, operation_id="op2", teacher_name="t", teacher_version="",
                                     student_name="s", width=3, seed=0, fields=[])
    ctx.operations.create(OperationRecord(id="op2", kind="projection", params={"plan": other.model_dump(mode="json")}))
    tasks.ProjectorTask().on_failure(KeyError("boom"), "id", ("op2",), {}, None)
    assert ctx.operations.get("op2").error["type"] == "InternalError"
