"""Celery tasks of the drift-detector's ComputeDrift, and the canvas that chains them.

    fit(op) ── sends ──→ chord([count_window(op, "reference", w) for w < n]
                               + [count_window(op, "stream", w) for w < W], reduce(op))

The stream's window count W is known only once `fit` has read the stream's partition index, so
`fit` sends the chord itself (deterministic task ids, recorded in the operation for Cancel; a
marker in the scratch keeps a redelivered `fit` from sending it twice, per re-send generation). Each task: checks the
operation is still live, counts its deliveries, reports progress (operation store + `PROGRESS`
result meta with the worker pid), retries transient errors with exponential backoff, and on a
permanent error fails the operation with the error's code and discards the scratch.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, Task, chord, shared_task
from celery.exceptions import Ignore

from services.common.operations import OperationRecord, OperationState, open_operation_store
from services.common.task_steps import OperationSteps, task_id
from services.common.settings import get_settings
from services.common.storage import DatasetStore, open_object_store
from services.drift_detector import pipeline
from services.drift_detector.pipeline import DriftContext, DriftPlan, FitResult, window_unit
from services.drift_detector.spec import SPEC

log = logging.getLogger(__name__)
STAGES = ("", "fit", "count", "reduce", "done")
TASK_PREFIX = SPEC.task_prefix

@lru_cache(maxsize=1)
def context() -> DriftContext:
    """Stores of this worker process (built after the fork: connections are not shared)."""
    settings = get_settings()
    return DriftContext(datasets=DatasetStore(open_object_store(settings)), operations=open_operation_store(settings))

def discard_outputs(ctx: DriftContext, plan: DriftPlan) -> None:
    """Best effort: delete a failed or cancelled operation's scratch."""
    try:
        pipeline.cleanup(ctx, plan)
    except Exception:  # scratch is invisible to readers; failing to delete it costs space only
        log.exception("could not discard outputs", extra={"operation_id": plan.operation_id})

STEPS: OperationSteps[DriftPlan] = OperationSteps(
    stages=STAGES,
    operations=lambda: context().operations,
    load_plan=pipeline.plan_from_record,
    discard=lambda plan: discard_outputs(context(), plan),
    not_ready=(pipeline.NotReadyError,),
)
DriftTask = STEPS.task_base()


def window_units(plan: DriftPlan, fitted: FitResult) -> list[str]:
    return [*(window_unit("reference", w) for w in range(plan.settings.drift.windows)),
            *(window_unit("stream", w) for w in range(fitted.stream_windows))]


def _signature(app: Celery, operation_id: str, name: str, unit: str, *args: Any) -> Any:
    return app.signature(f"{TASK_PREFIX}.{name}", args=(operation_id, *args), immutable=True).set(
        task_id=task_id(operation_id, unit))


@shared_task(bind=True, base=DriftTask, name=f"{TASK_PREFIX}.fit")
def fit_task(self: Task, operation_id: str) -> int:
    """Fit the bins, then send the per-window chord (once); returns the stream's window count."""
    plan = STEPS.start(self, operation_id, "fit", "fit")
    ctx = context()
    fitted = STEPS.run(self, lambda: pipeline.fit(ctx, plan))
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
    # One launch per generation: a re-send of a stalled operation (services.common.watchdog) launches again.
    marker = f"operations/{operation_id}/launched" + (f"-{record.resends}" if record.resends else "")
    if not ctx.datasets.objects.exists(marker):
        chord(headers)(body)
        ctx.datasets.objects.put_bytes(marker, b"1")
    ctx.operations.set_progress(operation_id, "fit", 1.0)
    return fitted.stream_windows


@shared_task(bind=True, base=DriftTask, name=f"{TASK_PREFIX}.count_window")
def count_window_task(self: Task, operation_id: str, source: str, window: int) -> int:
    unit = window_unit(source, window)  # type: ignore[arg-type]
    plan = STEPS.start(self, operation_id, unit, "count")
    ctx = context()
    report = STEPS.reporter(self, operation_id, unit)
    rows = STEPS.run(self, lambda: pipeline.count_window(ctx, plan, source, window, report))  # type: ignore[arg-type]
    if ctx.operations.get(operation_id).terminal:  # its discard may have run before this file existed
        discard_outputs(ctx, plan)
        raise Ignore()
    return rows


@shared_task(bind=True, base=DriftTask, name=f"{TASK_PREFIX}.reduce")
def reduce_task(self: Task, operation_id: str) -> float:
    plan = STEPS.start(self, operation_id, "reduce", "reduce")
    ctx = context()
    details = STEPS.run(self, lambda: pipeline.reduce(ctx, plan))
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


def resend(app: Celery, record: OperationRecord) -> None:
    """The stall watchdog's re-send: `reduce` alone once it was reached, else `fit`, which fits again
    (idempotent) and sends the window chord for this re-send's generation."""
    name = "reduce" if record.stage == "reduce" else "fit"
    _signature(app, record.id, name, name).apply_async()
