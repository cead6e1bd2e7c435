"""Celery tasks of the projector, and the chord that chains them (`launch_projection`).

    chord([shard_stats(op, field, i) for every PCA table shard], fit(op))      # skipped if no PCA
      → chord([apply_shard(op, field, i) for every table shard], publish(op))

Each task: checks the operation is still live (a cancelled or failed operation's tasks exit as
IGNORED), counts its deliveries (a task whose worker keeps dying fails the operation with that
reason instead of looping), reports progress per chunk (operation store + `PROGRESS` result meta
with the worker pid), retries transient errors with exponential backoff, and on a permanent error
fails the operation with the error's code and discards the half-written student version.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from celery import Celery, Task, chain, chord, shared_task
from celery.exceptions import Ignore

from services.common.errors import InternalError, PlatformError, UnavailableError
from services.common.operations import OperationRecord, OperationState, open_operation_store
from services.common.settings import get_settings
from services.common.storage import CheckpointStore, open_object_store
from services.projector import pipeline
from services.projector.pipeline import ProjectionPlan, ProjectorContext, apply_unit, stats_unit

log = logging.getLogger(__name__)
T = TypeVar("T")
STAGES = ("", "stats", "fit", "apply", "publish", "done")
TASK_PREFIX = "crossadapt.projector"
_NOT_READY_RETRY_S = 1.0
_NOT_READY_MAX_RETRIES = 120


def _transient_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (UnavailableError, ConnectionError, TimeoutError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError)


@lru_cache(maxsize=1)
def context() -> ProjectorContext:
    """Stores of this worker process (built after the fork: connections are not shared)."""
    settings = get_settings()
    return ProjectorContext(
        checkpoints=CheckpointStore(open_object_store(settings)),
        operations=open_operation_store(settings),
        chunk_rows=settings.shard_chunk_rows,
    )


def task_id(operation_id: str, unit: str) -> str:
    """Deterministic Celery task id of one unit (so Cancel can revoke and tests can look up progress)."""
    return f"{operation_id}-{unit.replace(':', '-')}"


def discard_outputs(ctx: ProjectorContext, plan: ProjectionPlan) -> None:
    """Best effort: delete the unpublished student files and the scratch of a failed/cancelled operation."""
    try:
        if plan.student_version:
            ctx.checkpoints.discard(plan.student_name, plan.student_version)
        pipeline.cleanup(ctx, plan)
    except Exception:  # the files are invisible without a manifest; cleanup failing is not fatal
        log.exception("could not discard outputs", extra={"operation_id": plan.operation_id})


class ProjectorTask(Task):
    """Marks the operation FAILED when a task fails for good (after its retries)."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:  # noqa: ARG002
        operation_id = args[0] if args else kwargs.get("operation_id")
        error = exc if isinstance(exc, PlatformError) else InternalError(
            f"{self.name} failed: {type(exc).__name__}: {exc}"
        )
        ctx = context()
        record = ctx.operations.fail(str(operation_id), error)
        log.error("operation failed", extra={"operation_id": operation_id, "task": self.name, "error": str(error)})
        if record is not None:
            discard_outputs(ctx, ProjectionPlan.model_validate(record.params["plan"]))


def _start(task: Task, operation_id: str, unit: str, stage: str) -> ProjectionPlan:
    """Enter `stage` (RUNNING) unless the operation ended; enforce the delivery limit."""
    ctx = context()
    settings = get_settings()
    deliveries = ctx.operations.count_attempt(operation_id, unit) - int(task.request.retries or 0)
    if deliveries > settings.task_max_deliveries:
        raise InternalError(
            f"task delivered {deliveries} times without finishing (its worker process keeps dying)", field=unit
        )

    def enter(record: OperationRecord) -> OperationRecord | None:
        if record.terminal:
            return None
        new_stage = max(record.stage, stage, key=STAGES.index)
        if record.state == OperationState.RUNNING and new_stage == record.stage:
            return None
        return record.model_copy(update={"state": OperationState.RUNNING, "stage": new_stage})

    record = ctx.operations.update(operation_id, enter)
    if record.terminal:
        raise Ignore()
    return ProjectionPlan.model_validate(record.params["plan"])


def _reporter(task: Task, operation_id: str, unit: str) -> Callable[[float], None]:
    ctx = context()

    def report(fraction: float) -> None:
        ctx.operations.set_progress(operation_id, unit, fraction)
        task.update_state(
            state="PROGRESS",
            meta={"operation_id": operation_id, "unit": unit, "fraction": fraction, "pid": os.getpid(),
                  "hostname": task.request.hostname},
        )
        if ctx.operations.get(operation_id).terminal:  # cancelled or failed elsewhere: stop early
            raise Ignore()

    return report


def _run(task: Task, work: Callable[[], T]) -> T:
    """Run a step; transient errors retry with exponential backoff, missing map outputs retry soon."""
    settings = get_settings()
    try:
        return work()
    except pipeline.NotReadyError as exc:
        raise task.retry(exc=exc, countdown=_NOT_READY_RETRY_S, max_retries=_NOT_READY_MAX_RETRIES) from exc
    except _transient_errors() as exc:
        countdown = min(2.0 ** int(task.request.retries or 0), settings.task_retry_backoff_max_s)
        raise task.retry(exc=exc, countdown=countdown, max_retries=settings.task_max_retries) from exc


@shared_task(bind=True, base=ProjectorTask, name=f"{TASK_PREFIX}.shard_stats")
def shard_stats_task(self: Task, operation_id: str, field: str, shard: int) -> int:
    unit = stats_unit(field, shard)
    plan = _start(self, operation_id, unit, "stats")
    report = _reporter(self, operation_id, unit)
    return _run(self, lambda: pipeline.shard_stats(context(), plan, field, shard, report))


@shared_task(bind=True, base=ProjectorTask, name=f"{TASK_PREFIX}.fit")
def fit_task(self: Task, operation_id: str) -> dict[str, str]:
    plan = _start(self, operation_id, "fit", "fit")
    kinds = _run(self, lambda: pipeline.fit(context(), plan))
    context().operations.set_progress(operation_id, "fit", 1.0)
    return kinds


@shared_task(bind=True, base=ProjectorTask, name=f"{TASK_PREFIX}.apply_shard")
def apply_shard_task(self: Task, operation_id: str, field: str, shard: int) -> str:
    unit = apply_unit(field, shard)
    plan = _start(self, operation_id, unit, "apply")
    report = _reporter(self, operation_id, unit)
    digest = _run(self, lambda: pipeline.apply_shard(context(), plan, field, shard, report))
    if context().operations.get(operation_id).terminal:
        # Failed or cancelled while this shard was written: its discard may have listed the
        # version before the file existed, so remove the file here (one of the two always does).
        discard_outputs(context(), plan)
        raise Ignore()
    return digest


@shared_task(bind=True, base=ProjectorTask, name=f"{TASK_PREFIX}.publish")
def publish_task(self: Task, operation_id: str) -> dict[str, str]:
    """Publish the student manifest; from here on the operation can no longer be cancelled."""
    plan = _start(self, operation_id, "publish", "publish")
    ctx = context()
    published = _run(self, lambda: pipeline.publish(ctx, plan))
    result = {"name": published.name, "version": published.version}
    ctx.operations.set_progress(operation_id, "publish", 1.0)
    ctx.operations.transition(
        operation_id, {OperationState.RUNNING}, state=OperationState.SUCCEEDED, stage="done", result=result
    )
    try:
        pipeline.cleanup(ctx, plan)
    except Exception:  # scratch left behind costs space, not correctness
        log.exception("could not clean up scratch", extra={"operation_id": operation_id})
    log.info("operation succeeded", extra={"operation_id": operation_id, "checkpoint": published.ref})
    return result


def build_workflow(app: Celery, plan: ProjectionPlan) -> tuple[Any, list[str]]:
    """The canvas of one projection and the ids of all its tasks (deterministic, for revoke)."""
    op = plan.operation_id

    def sig(name: str, unit: str, *args: Any) -> Any:
        return app.signature(f"{TASK_PREFIX}.{name}", args=(op, *args), immutable=True).set(task_id=task_id(op, unit))

    stats = [sig("shard_stats", stats_unit(f, i), f, i)
             for f, t in plan.tables.items() if plan.needs_stats(f) for i in range(len(t.shards))]
    applies = [sig("apply_shard", apply_unit(f, i), f, i) for f, t in plan.tables.items() for i in range(len(t.shards))]
    fit = sig("fit", "fit")
    publish = sig("publish", "publish")
    first = chord(stats, fit) if stats else fit
    workflow = chain(first, chord(applies, publish))
    ids = [s.id for s in (*stats, fit, *applies, publish)]
    return workflow, ids


def launch_projection(app: Celery, plan: ProjectionPlan) -> list[str]:
    """Send the projection's workflow to the broker; returns its task ids."""
    workflow, ids = build_workflow(app, plan)
    workflow.apply_async()
    return ids
