"""The life of a long, resumable training task on a Celery worker (both distillers' tasks).

A distillation runs as ONE Celery task for minutes or hours, checkpointing as it goes. Around the
training loop this module provides:

* `start_delivery`: counts deliveries (a task whose worker keeps dying fails its operation with that
  reason instead of looping), then takes the operation's **lease**.
* `Lease`: `details["worker"] = {holder, host, pid, heartbeat}` in the operation record, refreshed by a
  background thread. A redelivered copy of a task whose holder is alive (Redis redelivers unacked
  tasks after `visibility_timeout_s`, even to a live worker) waits until the holder finishes or its
  heartbeat is older than `lease_s`, then resumes from the last checkpoint; never two trainers at once.
* `Reporter`: throttled progress (operation store + Celery `PROGRESS` meta) that also stops the loop
  (`celery.exceptions.Ignore`) once the operation was cancelled or failed elsewhere, or the lease lost.
* `TrainingTask.on_failure`: a permanent error fails the operation with its code and discards outputs.

Settings (`CROSSADAPT_TRAINING_*`): `lease_s`, `heartbeat_s`, `report_interval_s`, `follow_poll_s`,
`ddp_timeout_s`.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from functools import lru_cache
from typing import Any, ClassVar, TypeVar

from celery import Task
from celery.exceptions import Ignore
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import InternalError, PlatformError, UnavailableError
from services.common.operations import OperationRecord, OperationState, OperationStore
from services.common.settings import get_settings
from services.common.task_steps import count_delivery

log = logging.getLogger(__name__)
T = TypeVar("T")


class TrainingTaskSettings(BaseSettings):
    """How long-running training tasks behave on a worker (environment `CROSSADAPT_TRAINING_*`)."""

    model_config = SettingsConfigDict(env_prefix="CROSSADAPT_TRAINING_", extra="ignore")

    lease_s: float = Field(15.0, gt=0, description="A holder silent this long is presumed dead; a redelivery takes over.")
    heartbeat_s: float = Field(2.0, gt=0, description="How often a running task refreshes its lease.")
    report_interval_s: float = Field(1.0, ge=0, description="Least time between two progress writes.")
    follow_poll_s: float = Field(2.0, gt=0, description="Co-distiller with follow: how often to look for new partitions.")
    ddp_timeout_s: float = Field(600.0, gt=0, description="torch.distributed collective timeout.")


@lru_cache(maxsize=1)
def training_settings() -> TrainingTaskSettings:
    return TrainingTaskSettings()


def transient_errors() -> tuple[type[BaseException], ...]:
    import redis.exceptions

    return (UnavailableError, ConnectionError, TimeoutError, redis.exceptions.ConnectionError,
            redis.exceptions.TimeoutError)


class TrainingTask(Task):
    """Fails the operation when the task fails for good; subclasses name their store and cleanup."""

    abstract = True
    operations: ClassVar[Callable[[], OperationStore]]
    discard: ClassVar[Callable[[OperationRecord], None]]

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:  # noqa: ARG002
        operation_id = str(args[0] if args else kwargs.get("operation_id"))
        error = exc if isinstance(exc, PlatformError) else InternalError(f"{self.name} failed: {type(exc).__name__}: {exc}")
        record = type(self).operations().fail(operation_id, error)
        log.error("operation failed", extra={"operation_id": operation_id, "task": self.name, "error": str(error)})
        if record is not None:
            try:
                type(self).discard(record)
            except Exception:  # unpublished files are invisible without a manifest
                log.exception("could not discard outputs", extra={"operation_id": operation_id})


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


def start_delivery(task: Task, operations: OperationStore, operation_id: str, stage: str,
                   stages: tuple[str, ...]) -> tuple[Lease, OperationRecord]:
    """Count this delivery (fail after `task_max_deliveries`), then take the lease (waits for a live holder)."""
    count_delivery(task, operations, operation_id, "deliveries")
    lease = Lease(operations, operation_id)
    return lease, lease.acquire(stage, stages)


class Reporter:
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
        operation_id = self.lease.operation_id
        self.operations.set_progress(operation_id, self.unit, fraction)
        if stage is not None or details:
            def change(record: OperationRecord) -> OperationRecord | None:
                if record.terminal:
                    return None
                update: dict[str, Any] = {"details": {**record.details, **(details or {})}}
                if stage is not None:
                    update["stage"] = stage
                return record.model_copy(update=update)

            record = self.operations.update(operation_id, change)
        else:
            record = self.operations.get(operation_id)
        self.task.update_state(state="PROGRESS", meta={"operation_id": operation_id, "unit": self.unit,
                                                        "fraction": fraction, "pid": os.getpid(),
                                                        "hostname": self.task.request.hostname})
        if record.terminal or self.lease.lost.is_set():  # cancelled, failed elsewhere, or taken over
            raise Ignore()


def run_retrying(task: Task, work: Callable[[], T]) -> T:
    """Run `work`; transient errors (broker, Redis, S3) retry the task with exponential backoff.

    The retry resumes from the last checkpoint, so what a retry costs is at most one checkpoint interval.
    """
    settings = get_settings()
    try:
        return work()
    except transient_errors() as exc:
        countdown = min(2.0 ** int(task.request.retries or 0), settings.task_retry_backoff_max_s)
        log.warning("transient error; retrying from the last checkpoint",
                    extra={"task": task.name, "error": f"{type(exc).__name__}: {exc}", "countdown": countdown})
        raise task.retry(exc=exc, countdown=countdown, max_retries=settings.task_max_retries) from exc
