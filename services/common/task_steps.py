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

A long training task (ONE Celery task that runs for minutes or hours, checkpointing
as it goes) uses the same steps with a lease instead of `start`/`reporter`:

    lease, plan = STEPS.take_lease(self, operation_id, "prepare")   # deliveries counted, then the lease
    report = STEPS.lease_reporter(self, lease)                      # throttled; stops if cancelled or taken over
    try: STEPS.run(self, lambda: pipeline.train(ctx, plan, report))
    finally: lease.release()

* `Lease`: `details["worker"] = {holder, host, pid, heartbeat}` in the operation record, refreshed by a
  background thread. A redelivered copy of a task whose holder is alive (Redis redelivers unacked
  tasks after `visibility_timeout_s`, even to a live worker) waits until the holder finishes or its
  heartbeat is older than `lease_s`, then resumes from the last checkpoint; never two trainers at once.
* `LeaseReporter`: throttled progress (operation store + Celery `PROGRESS` meta) with stage and details
  changes, that also stops the loop (`celery.exceptions.Ignore`) once the operation was cancelled or
  failed elsewhere, or the lease lost.

Settings of long tasks (`CROSSADAPT_TRAINING_*`): `lease_s`, `heartbeat_s`, `report_interval_s`,
`follow_poll_s`, `ddp_timeout_s`.
"""

from __future__ import annotations

import importlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any, Generic, TypeVar

from celery import Task
from celery.exceptions import Ignore
from celery.signals import worker_init
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import InternalError, PlatformError, UnavailableError
from services.common.operations import OperationRecord, OperationState, OperationStore
from services.common.settings import get_settings

log = logging.getLogger(__name__)
P = TypeVar("P")
T = TypeVar("T")
NOT_READY_RETRY_S = 1.0
NOT_READY_MAX_RETRIES = 120


class TrainingTaskSettings(BaseSettings):
    """How long-running training tasks behave on a worker (environment `CROSSADAPT_TRAINING_*`)."""

    model_config = SettingsConfigDict(env_prefix="CROSSADAPT_TRAINING_", extra="ignore")

    lease_s: float = Field(15.0, gt=0, description="A holder silent this long is presumed dead; a redelivery takes over.")
    heartbeat_s: float = Field(2.0, gt=0, description="How often a running task refreshes its lease.")
    report_interval_s: float = Field(1.0, ge=0, description="Least time between two progress writes.")
    follow_poll_s: float = Field(2.0, gt=0, description="A task following a stream: how often to look for new data.")
    ddp_timeout_s: float = Field(600.0, gt=0, description="torch.distributed collective timeout.")


@lru_cache(maxsize=1)
def training_settings() -> TrainingTaskSettings:
    return TrainingTaskSettings()


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


def publish_progress(task: Task, store: OperationStore, operation_id: str, unit: str, fraction: float,
                     change: Callable[[OperationRecord], OperationRecord | None] | None = None) -> OperationRecord:
    """Write a unit's progress (store + `PROGRESS` meta with the worker's pid), apply `change` to a live
    record if given; returns the record (terminal: the caller stops)."""
    store.set_progress(operation_id, unit, fraction)
    record = store.update(operation_id, change) if change is not None else store.get(operation_id)
    task.update_state(state="PROGRESS", meta={
        "operation_id": operation_id, "unit": unit, "fraction": fraction, "pid": os.getpid(),
        "hostname": task.request.hostname})
    return record


class Lease:
    """This delivery's hold on an operation, kept alive by a heartbeat thread (see the module docstring)."""

    def __init__(self, operations: OperationStore, operation_id: str, settings: TrainingTaskSettings | None = None):
        self.operations = operations
        self.operation_id = operation_id
        self.settings = settings or training_settings()
        self.holder = uuid.uuid4().hex
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _entry(self) -> dict[str, Any]:
        return {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(), "heartbeat": time.time()}

    def acquire(self, stage: str, stages: tuple[str, ...]) -> OperationRecord:
        """Wait until the operation is free (or ends: Ignore), then hold it, RUNNING in at least `stage`."""
        while True:
            taken: list[bool] = []

            def take(record: OperationRecord) -> OperationRecord | None:
                if record.terminal:
                    return None
                current = record.details.get("worker")
                if current and current.get("holder") != self.holder and \
                        time.time() - float(current.get("heartbeat", 0)) < self.settings.lease_s:
                    return None  # a live holder: wait
                taken.append(True)
                new_stage = max(record.stage, stage, key=lambda s: stages.index(s) if s in stages else 0)
                return record.model_copy(update={"state": OperationState.RUNNING, "stage": new_stage,
                                                 "details": {**record.details, "worker": self._entry()}})

            record = self.operations.update(self.operation_id, take)
            if record.terminal:
                raise Ignore()
            if taken:
                self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)
                self._thread.start()
                return record
            time.sleep(min(1.0, self.settings.lease_s / 4))

    def _beat(self) -> None:
        while not self._stop.wait(self.settings.heartbeat_s):
            def refresh(record: OperationRecord) -> OperationRecord | None:
                current = record.details.get("worker") or {}
                if record.terminal or current.get("holder") != self.holder:
                    self.lost.set()
                    return None
                return record.model_copy(update={"details": {**record.details, "worker": self._entry()}})

            try:
                self.operations.update(self.operation_id, refresh)
            except Exception:  # a broker/Redis blip: the next beat retries; the lease tolerates lease_s
                log.warning("lease heartbeat failed", extra={"operation_id": self.operation_id}, exc_info=True)
            if self.lost.is_set():
                return

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

        def drop(record: OperationRecord) -> OperationRecord | None:
            if (record.details.get("worker") or {}).get("holder") != self.holder:
                return None
            details = dict(record.details)
            details["worker"] = {**details["worker"], "heartbeat": 0.0}  # free at once, pid kept for the record
            return record.model_copy(update={"details": details})

        try:
            self.operations.update(self.operation_id, drop)
        except Exception:  # expiry of the heartbeat frees it anyway
            log.warning("could not release the lease", extra={"operation_id": self.operation_id}, exc_info=True)


class LeaseReporter:
    """Throttled progress of one unit, stage and details changes; raises Ignore once the operation must stop."""

    def __init__(self, task: Task, operations: OperationStore, lease: Lease, unit: str = "train",
                 interval_s: float | None = None) -> None:
        self.task, self.operations, self.lease, self.unit = task, operations, lease, unit
        self.interval_s = training_settings().report_interval_s if interval_s is None else interval_s
        self._last = 0.0

    def __call__(self, fraction: float, *, force: bool = False, stage: str | None = None,
                 details: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        change = None
        if stage is not None or details:
            def change(record: OperationRecord) -> OperationRecord | None:
                if record.terminal:
                    return None
                update: dict[str, Any] = {"details": {**record.details, **(details or {})}}
                if stage is not None:
                    update["stage"] = stage
                return record.model_copy(update=update)

        record = publish_progress(self.task, self.operations, self.lease.operation_id, self.unit, fraction, change)
        if record.terminal or self.lease.lost.is_set():  # cancelled, failed elsewhere, or taken over
            raise Ignore()


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
            if publish_progress(task, store, operation_id, unit, fraction).terminal:  # cancelled or failed elsewhere
                raise Ignore()

        return report

    def take_lease(self, task: Task, operation_id: str, stage: str, unit: str = "deliveries") -> tuple[Lease, P]:
        """A long task's start: count this delivery (fail after `task_max_deliveries`), then take the
        operation's lease (waits while another holder is alive; Ignore if the operation ended)."""
        store = self.operations()
        count_delivery(task, store, operation_id, unit)
        lease = Lease(store, operation_id)
        record = lease.acquire(stage, self.stages)
        try:
            return lease, self.load_plan(record.params)
        except BaseException:
            lease.release()
            raise

    def lease_reporter(self, task: Task, lease: Lease, unit: str = "train") -> LeaseReporter:
        return LeaseReporter(task, self.operations(), lease, unit)

    def run(self, task: Task, work: Callable[[], T]) -> T:
        """Run a step; transient errors retry with exponential backoff, missing map outputs retry soon."""
        settings = get_settings()
        try:
            return work()
        except self.not_ready as exc:
            raise task.retry(exc=exc, countdown=NOT_READY_RETRY_S, max_retries=NOT_READY_MAX_RETRIES) from exc
        except transient_errors() as exc:
            countdown = min(2.0 ** int(task.request.retries or 0), settings.task_retry_backoff_max_s)
            log.warning("transient error; retrying (a long task resumes from its last checkpoint)",
                        extra={"task": task.name, "error": f"{type(exc).__name__}: {exc}", "countdown": countdown})
            raise task.retry(exc=exc, countdown=countdown, max_retries=settings.task_max_retries) from exc

    def fail(self, task_name: str, exc: BaseException, operation_id: str) -> None:
        """Fail the operation for good with the error's code, then discard its outputs."""
        error = exc if isinstance(exc, PlatformError) else InternalError(
            f"{task_name} failed: {type(exc).__name__}: {exc}")
        record = self.operations().fail(str(operation_id), error)
        log.error("operation failed", extra={"operation_id": operation_id, "task": task_name, "error": str(error)})
        if record is not None:
            self.discard_record(record)

    def discard_record(self, record: OperationRecord) -> None:
        """Best-effort removal of an ended operation's unpublished outputs."""
        try:
            self.discard(self.load_plan(record.params))
        except Exception:  # unpublished files are invisible without a manifest: costs space, not correctness
            log.exception("could not discard outputs", extra={"operation_id": record.id})

    def task_base(self) -> type[Task]:
        """A Celery Task class that fails the operation (and discards its outputs) when a task fails for good."""
        steps = self

        class OperationTask(Task):
            def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict,  # noqa: ARG002
                           einfo: Any) -> None:
                steps.fail(self.name, exc, str(args[0] if args else kwargs.get("operation_id")))

        return OperationTask


def preload_training_runtime(**_: Any) -> None:
    """A training service's `worker_init` receiver: in the worker's main process, before the pool forks,
    import what the first optimiser a process builds imports (torch._dynamo, ~1.5-2 s on 2 vCPUs). Each
    pool process inherits it, so no training task pays it on its clock; in process, `crossadapt switch`
    pays it before timing too. One function for every service, so a worker that serves several queues
    (celery dedups a receiver connected twice) imports it once."""
    from crossadapt.training import preload_optimizer_runtime

    preload_optimizer_runtime()


def worker_module(name: str) -> Callable[..., ModuleType]:
    """A service's training module (torch and the engine), imported on first call instead of with the tasks.

    The gRPC server imports its service's tasks only to send them; a server that loaded the engine with them
    started seconds slower (torch's import, on every replica and every `crossadapt up`) and held ~180 MB it
    never used. The worker imports the module in its main process before the pool forks (`worker_init`),
    so no task pays that import on its clock.
    """

    def load(**_: Any) -> ModuleType:
        return importlib.import_module(name)

    worker_init.connect(load, weak=False)
    return load
