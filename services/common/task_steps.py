"""What every operation's Celery task does around its work, shared by the services' task modules.

    STEPS = OperationSteps(stages=("", "select", "score", "publish", "done"), operations=lambda: context().operations,
                           load_plan=plan_from_record, discard=lambda plan: cleanup(context(), plan),
                           not_ready=(pipeline.NotReadyError,))

    @shared_task(bind=True, base=STEPS.task_base(), name="crossadapt.sampler.score_block")
    def score_block(self, operation_id, block):
        plan = STEPS.start(self, operation_id, unit, "score")        # RUNNING, stage, delivery limit
        report = STEPS.reporter(self, operation_id, unit)             # progress; stops if cancelled
        return STEPS.run(self, lambda: pipeline.score_block(..., report))   # retries transient errors

* `start`: counts the unit's deliveries (a task whose worker keeps dying fails the operation with
  that reason instead of looping), moves the operation to RUNNING and the furthest stage, and exits
  as IGNORED if the operation already ended (cancelled or failed elsewhere).
* `reporter`: per-unit progress in the operation store and as `PROGRESS` result meta (with the
  worker's pid); raises Ignore once the operation ended, so cancelled work stops early.
* `run`: transient errors (S3, Redis, broker) retry with exponential backoff; a missing map output
  (`not_ready`) retries soon.
* `task_base()`: a Task class whose `on_failure` fails the operation with the error's code and
  discards its unpublished outputs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from celery import Task
from celery.exceptions import Ignore

from services.common.errors import InternalError, PlatformError, UnavailableError
from services.common.operations import OperationRecord, OperationState, OperationStore
from services.common.settings import get_settings

log = logging.getLogger(__name__)
P = TypeVar("P")
T = TypeVar("T")
NOT_READY_RETRY_S = 1.0
NOT_READY_MAX_RETRIES = 120


def transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth a retry: a dependency was briefly unreachable."""
    import redis.exceptions

    return (UnavailableError, ConnectionError, TimeoutError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError)


def task_id(operation_id: str, unit: str) -> str:
    """Deterministic Celery task id of one unit (so Cancel can revoke and tests can look up progress)."""
    return f"{operation_id}-{unit.replace(':', '-')}"


def count_delivery(task: Task, store: OperationStore, operation_id: str, unit: str) -> int:
    """Count one more start of `unit` (retries aside); fail once its worker evidently keeps dying.

    The limit is `task_max_deliveries` plus the watchdog's re-sends of the operation: each re-send
    legitimately starts the unit once more.
    """
    deliveries = store.count_attempt(operation_id, unit) - int(task.request.retries or 0)
    limit = get_settings().task_max_deliveries
    if deliveries > limit and deliveries > limit + store.get(operation_id).resends:
        raise InternalError(
            f"task delivered {deliveries} times without finishing (its worker process keeps dying)", field=unit)
    return deliveries


@dataclass(frozen=True)
class OperationSteps(Generic[P]):
    """The bookkeeping of one service's tasks: stages in order, how to load its plan and discard outputs."""

    stages: tuple[str, ...]
    operations: Callable[[], OperationStore]  # the worker process's store (built after the fork)
    load_plan: Callable[[dict[str, Any]], P]  # record.params -> the service's plan
    discard: Callable[[P], None]  # best-effort removal of a failed or cancelled operation's outputs
    not_ready: tuple[type[BaseException], ...] = ()

    def start(self, task: Task, operation_id: str, unit: str, stage: str) -> P:
        """Enter `stage` (RUNNING) unless the operation ended; enforce the delivery limit."""
        store = self.operations()
        count_delivery(task, store, operation_id, unit)

        def enter(record: OperationRecord) -> OperationRecord | None:
            if record.terminal:
                return None
            new_stage = max(record.stage, stage, key=self.stages.index)
            if record.state == OperationState.RUNNING and new_stage == record.stage:
                return None
            return record.model_copy(update={"state": OperationState.RUNNING, "stage": new_stage})

        record = store.update(operation_id, enter)
        if record.terminal:
            raise Ignore()
        return self.load_plan(record.params)

    def reporter(self, task: Task, operation_id: str, unit: str) -> Callable[[float], None]:
        store = self.operations()

        def report(fraction: float) -> None:
            store.set_progress(operation_id, unit, fraction)
            task.update_state(state="PROGRESS", meta={
                "operation_id": operation_id, "unit": unit, "fraction": fraction, "pid": os.getpid(),
                "hostname": task.request.hostname})
            if store.get(operation_id).terminal:  # cancelled or failed elsewhere: stop early
                raise Ignore()

        return report

    def run(self, task: Task, work: Callable[[], T]) -> T:
        """Run a step; transient errors retry with exponential backoff, missing map outputs retry soon."""
        settings = get_settings()
        try:
            return work()
        except self.not_ready as exc:
            raise task.retry(exc=exc, countdown=NOT_READY_RETRY_S, max_retries=NOT_READY_MAX_RETRIES) from exc
        except transient_errors() as exc:
            countdown = min(2.0 ** int(task.request.retries or 0), settings.task_retry_backoff_max_s)
            raise task.retry(exc=exc, countdown=countdown, max_retries=settings.task_max_retries) from exc

    def fail(self, task_name: str, exc: BaseException, operation_id: str) -> None:
        """Fail the operation for good with the error's code, then discard its outputs."""
        error = exc if isinstance(exc, PlatformError) else InternalError(
            f"{task_name} failed: {type(exc).__name__}: {exc}")
        record = self.operations().fail(str(operation_id), error)
        log.error("operation failed", extra={"operation_id": operation_id, "task": task_name, "error": str(error)})
        if record is not None:
            self.discard_quietly(self.load_plan(record.params), operation_id)

    def discard_quietly(self, plan: P, operation_id: str) -> None:
        try:
            self.discard(plan)
        except Exception:  # unpublished files are invisible without a manifest: costs space, not correctness
            log.exception("could not discard outputs", extra={"operation_id": operation_id})

    def task_base(self) -> type[Task]:
        """A Celery Task class that fails the operation (and discards its outputs) when a task fails for good."""
        steps = self

        class OperationTask(Task):
            def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,  # noqa: ARG002
                           einfo: Any) -> None:
                steps.fail(self.name, exc, str(args[0] if args else kwargs.get("operation_id")))

        return OperationTask
