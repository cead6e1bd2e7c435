"""Celery tasks of the drift-detector's ComputeDrift, and the canvas that chains them.

    fit(op) ── sends ──→ chord([count_window(op, "reference", w) for w < n]
                               + [count_window(op, "stream", w) for w < W], reduce(op))

The stream's window count W is known only once `fit` has read the stream's partition index, so
`fit` sends the chord itself (deterministic task ids, recorded in the operation for Cancel; a
marker in the scratch keeps a redelivered `fit` from sending it twice). Each task: checks the
operation is still live, counts its deliveries, reports progress (operation store + `PROGRESS`
result meta with the worker pid), retries transient errors with exponential backoff, and on a
permanent error fails the operation with the error's code and discards the scratch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import lru_cache
from typing import Any, TypeVar

from celery import Celery, Task, chord, shared_task
from celery.exceptions import Ignore

from services.common.errors import InternalError, PlatformError, UnavailableError
from services.common.operations import OperationRecord, OperationState, open_operation_store
from services.common.settings import get_settings
from services.common.storage import DatasetStore, open_object_store
from services.drift_detector import pipeline
from services.drift_detector.pipeline import DriftContext, DriftPlan, FitResult, window_unit
from services.drift_detector.spec import SPEC

log = logging.getLogger(__name__)
T = TypeVar("T")
STAGES = ("", "fit", "count", "reduce", "done")
TASK_PREFIX = SPEC.task_prefix
_NOT_READY_RETRY_S = 1.0
_NOT_READY_MAX_RETRIES = 120


def _transient_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (UnavailableError, ConnectionError, TimeoutError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError)


@lru_cache(maxsize=1)
def context() -> DriftContext:
    """Stores of this worker process (built after the fork: connections are not shared)."""
    settings = get_settings()
    return DriftContext(datasets=DatasetStore(open_object_store(settings)), operations=open_operation_store(settings))


def task_id(operation_id: str, unit: str) -> str:
    """Deterministic Celery task id of one unit (so Cancel can revoke and tests can look up progress)."""
    return f"{operation_id}-{unit.replace(':', '-')}"


def discard_outputs(ctx: DriftContext, plan: DriftPlan) -> None:
    """Best effort: delete a failed or cancelled operation's scratch."""
    try:
        pipeline.cleanup(ctx, plan)
    except Exception:  # scratch is invisible to readers; failing to delete it costs space only
        log.exception("could not discard outputs", extra={"operation_id": plan.operation_id})


class DriftTask(Task):
    """Marks the operation FAILED when a task fails for good (after its retries)."""

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:  # noqa: ARG002
        operation_id = args[0] if args else kwargs.get("operation_id")
        error = exc if isinstance(exc, PlatformError) else InternalError(
            f"{self.name} failed: {type(exc).__name__}: {exc}")
        ctx = context()
        record = ctx.operations.fail(str(operation_id), error)
        log.error("operation failed", extra={"operation_id": operation_id, "task": self.name, "error": str(error)})
        if record is not None:
            discard_outputs(ctx, pipeline.plan_from_record(record.params))


def _start(task: Task, operation_id: str, unit: str, stage: str) -> DriftPlan:
    """Enter `stage` (RUNNING) unless the operation ended; enforce the delivery limit."""
    ctx = context()
    settings = get_settings()
    deliveries = ctx.operations.count_attempt(operation_id, unit) - int(task.request.retries or 0)
    if deliveries > settings.task_max_deliveries:
        raise InternalError(
            f"task delivered {deliveries} times without finishing (its worker process keeps dying)", field=unit)

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
    return pipeline.plan_from_record(record.params)


def _reporter(task: Task, operation_id: str, unit: str) -> Callable[[float], None]:
    ctx = context()

    def report(fraction: float) -> None:
        ctx.operations.set_progress(operation_id, unit, fraction)
        task.update_state(state="PROGRESS", meta={
            "operation_id": operation_id, "unit": unit, "fraction": fraction, "pid": os.getpid(),
            "hostname": task.request.hostname})
        if ctx.operations.get(operation_id).terminal:  # cancelled or failed elsewhere: stop early
            raise Ignore()

    return report


def _run(task: Task, work: Callable[[], T]) -> T:
    """Run a step; transient errors retry with exponential backoff, missing inputs retry soon."""
    settings = get_settings()
    try:
        return work()
    except pipeline.NotReadyError as exc:
        raise task.retry(exc=exc, countdown=_NOT_READY_RETRY_S, max_retries=_NOT_READY_MAX_RETRIES) from exc
    except _transient_errors() as exc:
        countdown = min(2.0 ** int(task.request.retries or 0), settings.task_retry_backoff_max_s)
        raise task.retry(exc=exc, countdown=countdown, max_retries=settings.task_max_retries) from exc


def window_units(plan: DriftPlan, fitted: FitResult) -> list[str]:
    return [*(window_unit("reference", w) for w in range(plan.settings.drift.windows)),
            *(window_unit("stream", w) for w in range(fitted.stream_windows))]


def _signature(app: Celery, operation_id: str, name: str, unit: str, *args: Any) -> Any:
    return app.signature(f"{TASK_PREFIX}.{name}", args=(operation_id, *args), immutable=True).set(
        task_id=task_id(operation_id, unit))


@shared_task(bind=True, base=DriftTask, name=f"{TASK_PREFIX}.fit")
def fit_task(self: Task, operation_id: str) -> int:
    """Fit the bins, then send the per-window chord (once); returns the stream's window count."""
    plan = _start(self, operation_id, "fit", "fit")
    ctx = context()
    fitted = _run(self, lambda: pipeline.fit(ctx, plan))
    units = window_units(plan, fitted)
    headers = [_signature(self.app, operation_id, "count_window", unit, unit.split(":")[0], int(unit.split(":")[1]))
               for unit in units]
    body = _signature(self.app, operation_id, "reduce", "reduce")
    ids = [task_id(operation_id, "fit"), *(h.id for h in headers), body.id]
    # Units final before fit counts as done, so progress never goes back.
    record = ctx.operations.update(operation_id, lambda r: None if r.terminal else r.model_copy(
        update={"units": len(units) + 2, "task_ids": ids}))
    if record.terminal:
        raise Ignore()
    marker = f"operations/{operation_id}/launched"
    if not ctx.datasets.objects.exists(marker):
        chord(headers)(body)
        ctx.datasets.objects.put_bytes(marker, b"1")
    ctx.operations.set_progress(operation_id, "fit", 1.0)
    return fitted.stream_windows


@shared_task(bind=True, base=DriftTask, name=f"{TASK_PREFIX}.count_window")
def count_window_task(self: Task, operation_id: str, source: str, window: int) -> int:
    unit = window_unit(source, window)  # type: ignore[arg-type]
    plan = _start(self, operation_id, unit, "count")
    ctx = context()
    report = _reporter(self, operation_id, unit)
    rows = _run(self, lambda: pipeline.count_window(ctx, plan, source, window, report))  # type: ignore[arg-type]
    if ctx.operations.get(operation_id).terminal:  # its discard may have run before this file existed
        discard_outputs(ctx, plan)
        raise Ignore()
    return rows


@shared_task(bind=True, base=DriftTask, name=f"{TASK_PREFIX}.reduce")
def reduce_task(self: Task, operation_id: str) -> float:
    plan = _start(self, operation_id, "reduce", "reduce")
    ctx = context()
    details = _run(self, lambda: pipeline.reduce(ctx, plan))
    ctx.operations.set_progress(operation_id, "reduce", 1.0)
    ctx.operations.transition(operation_id, {OperationState.RUNNING}, state=OperationState.SUCCEEDED, stage="done",
                              details=details)
    discard_outputs(ctx, plan)
    log.info("operation succeeded", extra={"operation_id": operation_id, "shift": details["shift"],
                                           "replay_ratio": details["replay_ratio"]})
    return float(details["shift"])


def build_workflow(app: Celery, plan: DriftPlan) -> tuple[Any, list[str]]:
    """The first task of one measurement (it sends the rest) and the ids known at Start."""
    fit = _signature(app, plan.operation_id, "fit", "fit")
    return fit, [fit.id]
