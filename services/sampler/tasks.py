"""Celery tasks of the sampler, and the canvas that chains them (`build_workflow`).

    select(op) → chord([score_block(op, k) for k in K blocks], publish(op))

Each task: checks the operation is still live (a cancelled or failed operation's tasks exit as
IGNORED), counts its deliveries (a task whose worker keeps dying fails the operation with that
reason instead of looping), reports progress per chunk (operation store + `PROGRESS` result meta
with the worker pid), retries transient errors with exponential backoff, and on a permanent error
fails the operation with the error's code and discards the scratch.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, Task, chain, chord, shared_task
from celery.exceptions import Ignore

from services.common.operations import OperationRecord, OperationState, open_operation_store
from services.common.task_steps import OperationSteps, task_id, worker_module
from services.common.settings import get_settings
from services.common.storage import CheckpointStore, DatasetStore, open_object_store
from services.sampler import pipeline
from services.sampler.pipeline import SamplerContext, SamplingPlan, block_unit
from services.sampler.spec import SPEC

log = logging.getLogger(__name__)
STAGES = ("", "select", "score", "publish", "done")
TASK_PREFIX = SPEC.task_prefix
# Scoring a block needs the teacher (torch, the model zoo): both load in the worker's main process before the pool
# forks, so no block's task pays that import on its clock, while the server imports this module without them.
worker_module("crossadapt.models.registry")
worker_module("crossadapt.transfer.offline.distillation")


@lru_cache(maxsize=1)
def context() -> SamplerContext:
    """Stores of this worker process (built after the fork: connections are not shared)."""
    settings = get_settings()
    objects = open_object_store(settings)
    return SamplerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                          operations=open_operation_store(settings), chunk_rows=settings.shard_chunk_rows)


def discard_outputs(ctx: SamplerContext, plan: SamplingPlan) -> None:
    """Best effort: delete a failed or cancelled operation's scratch (the sample itself is one atomic object)."""
    try:
        pipeline.cleanup(ctx, plan)
    except Exception:  # scratch is invisible to readers; failing to delete it costs space only
        log.exception("could not discard outputs", extra={"operation_id": plan.operation_id})


STEPS: OperationSteps[SamplingPlan] = OperationSteps(
    stages=STAGES,
    operations=lambda: context().operations,
    load_plan=pipeline.plan_from_record,
    discard=lambda plan: discard_outputs(context(), plan),
    not_ready=(pipeline.NotReadyError,),
)
SamplerTask = STEPS.task_base()


@shared_task(bind=True, base=SamplerTask, name=f"{TASK_PREFIX}.select")
def select_task(self: Task, operation_id: str) -> int:
    """The core sampler's choice over the whole dataset (two columns read); its report joins `details`."""
    plan = STEPS.start(self, operation_id, "select", "select")
    ctx = context()
    selection = STEPS.run(self, lambda: pipeline.select(ctx, plan))
    ctx.operations.set_progress(operation_id, "select", 1.0)
    sampling = selection.report.model_dump(mode="json")
    ctx.operations.update(operation_id, lambda r: None if r.terminal else r.model_copy(
        update={"details": {**r.details, "sampling": sampling}}))
    return int(selection.report.total_rows)


@shared_task(bind=True, base=SamplerTask, name=f"{TASK_PREFIX}.score_block")
def score_block_task(self: Task, operation_id: str, block: int) -> str:
    unit = block_unit(block)
    plan = STEPS.start(self, operation_id, unit, "score")
    ctx = context()
    report = STEPS.reporter(self, operation_id, unit)
    entry = STEPS.run(self, lambda: pipeline.score_block(ctx, plan, block, report))
    if ctx.operations.get(operation_id).terminal:
        # Failed or cancelled while this block was written: its discard may have run before the
        # file existed, so remove the scratch here (one of the two always does).
        discard_outputs(ctx, plan)
        raise Ignore()
    ctx.operations.set_progress(operation_id, unit, 1.0)
    return entry.sha256


@shared_task(bind=True, base=SamplerTask, name=f"{TASK_PREFIX}.publish")
def publish_task(self: Task, operation_id: str) -> dict[str, str]:
    """Publish the sample as one partition; from here on the operation can no longer be cancelled."""
    plan = STEPS.start(self, operation_id, "publish", "publish")
    ctx = context()
    details = STEPS.run(self, lambda: pipeline.publish(ctx, plan))
    result = {"dataset": plan.sample_name}
    ctx.operations.set_progress(operation_id, "publish", 1.0)
    ctx.operations.transition(operation_id, {OperationState.RUNNING}, state=OperationState.SUCCEEDED, stage="done",
                              result=result, details=details)
    discard_outputs(ctx, plan)
    log.info("operation succeeded", extra={"operation_id": operation_id, "dataset": plan.sample_name,
                                           "rows": details["rows"]})
    return result


def build_workflow(app: Celery, plan: SamplingPlan, from_stage: str = "") -> tuple[Any, list[str]]:
    """The canvas of one sampling (its rest from `from_stage` on) and the ids of all its tasks
    (deterministic, for revoke)."""
    op = plan.operation_id

    def sig(name: str, unit: str, *args: Any) -> Any:
        return app.signature(f"{TASK_PREFIX}.{name}", args=(op, *args), immutable=True).set(task_id=task_id(op, unit))

    select = sig("select", "select")
    blocks = [sig("score_block", block_unit(k), k) for k in range(plan.blocks)]
    publish = sig("publish", "publish")
    rest = {"score": chord(blocks, publish), "publish": publish}
    return rest.get(from_stage, chain(select, chord(blocks, publish))), [s.id for s in (select, *blocks, publish)]


def resend(app: Celery, record: OperationRecord) -> None:
    """The stall watchdog's re-send: the workflow from the recorded stage on (every stage is idempotent)."""
    build_workflow(app, pipeline.plan_from_record(record.params), from_stage=record.stage)[0].apply_async()
