"""The operations API every service serves, and the start/serve plumbing the services share.

* `operation_message`: an operation record in its wire form (`crossadapt.v1.Operation`).
* `OperationsServicer`: `crossadapt.v1.OperationsService` (Get / Watch / Cancel / List) over the
  shared operation store; a service plugs in how to cancel its own kinds (`Canceller`).
* `start_operation`: the Start* skeleton every service uses (idempotency key → existing operation,
  validate/prepare, atomic create, send; `fail_start` fails it if the broker refuses), built on
  `operation_id_for`, `request_fingerprint`, `existing_operation` (request_id → operation id; the same
  key with other parameters is INVALID_ARGUMENT).
* `serve_service`: store, metrics, Celery app, gRPC server (the service + operations + health +
  reflection) and the stall watchdog (services.common.watchdog), run until SIGTERM.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from celery import Celery
from google.protobuf.json_format import MessageToDict
from prometheus_client import REGISTRY

from services.common.celery_app import create_celery_app
from services.common.errors import (
    CancelledError,
    FailedPreconditionError,
    InvalidArgumentError,
    PlatformError,
    UnavailableError,
    grpc_code_number,
    grpc_status,
)
from services.common.grpc_server import build_server, serve_until_signal
from services.common.metrics import OperationsCollector, start_metrics_server
from services.common.operations import OperationRecord, OperationState, OperationStore, open_operation_store
from services.common.proto import common_pb2, operations_pb2, operations_pb2_grpc
from services.common.logs import configure_logging
from services.common.settings import PlatformSettings, get_settings
from services.common.watchdog import StallWatchdog

log = logging.getLogger(__name__)
OPERATIONS_SERVICE_NAME = operations_pb2.DESCRIPTOR.services_by_name["OperationsService"].full_name
_REQUEST_NAMESPACE = uuid.UUID("5b0f4a43-5e4e-4c55-9d0b-3a8f1f0c2d17")
_STATES = {
    OperationState.PENDING: common_pb2.OPERATION_STATE_PENDING,
    OperationState.RUNNING: common_pb2.OPERATION_STATE_RUNNING,
    OperationState.SUCCEEDED: common_pb2.OPERATION_STATE_SUCCEEDED,
    OperationState.FAILED: common_pb2.OPERATION_STATE_FAILED,
    OperationState.CANCELLED: common_pb2.OPERATION_STATE_CANCELLED,
}
TERMINAL_WIRE_STATES = frozenset({common_pb2.OPERATION_STATE_SUCCEEDED, common_pb2.OPERATION_STATE_FAILED,
                                  common_pb2.OPERATION_STATE_CANCELLED})


def operation_message(record: OperationRecord, progress: float) -> common_pb2.Operation:
    """The wire form of an operation record.

    `record.result` with `name` and `version` is a checkpoint; with `dataset` a dataset ref;
    `record.details` (any JSON) travels as the `details` Struct.
    """
    message = common_pb2.Operation(
        id=record.id, kind=record.kind, state=_STATES[record.state], progress=progress, stage=record.stage
    )
    if record.error:
        error = PlatformError.from_dict(record.error)
        code = grpc_status(error)
        message.error.CopyFrom(common_pb2.OperationError(
            code=grpc_code_number(code), code_name=code.name, message=error.message, field=error.field or ""
        ))
    result = record.result or {}
    if "name" in result and "version" in result:
        message.checkpoint.CopyFrom(common_pb2.CheckpointRef(name=result["name"], version=result["version"]))
    elif "dataset" in result:
        message.dataset.CopyFrom(common_pb2.DatasetRef(name=result["dataset"]))
    if record.details:
        message.details.update(record.details)
    message.create_time.FromNanoseconds(int(record.created_at * 1e9))
    message.update_time.FromNanoseconds(int(record.updated_at * 1e9))
    return message


def operation_id_for(kind: str, request_id: str) -> str:
    """A deterministic id for an idempotency key, a fresh one without."""
    if request_id:
        return f"{kind[:4]}-{uuid.uuid5(_REQUEST_NAMESPACE, f'{kind}:{request_id}').hex[:24]}"
    return f"{kind[:4]}-{uuid.uuid4().hex[:24]}"


def request_fingerprint(request: Any) -> dict[str, Any]:
    """The request as JSON, without its idempotency key (what a replay must match)."""
    data = MessageToDict(request, preserving_proto_field_name=True)
    data.pop("request_id", None)
    return data


def existing_operation(store: OperationStore, operation_id: str, fingerprint: dict[str, Any]) -> OperationRecord | None:
    """The record a replayed request_id already made, or None; INVALID_ARGUMENT if its parameters differ."""
    try:
        record = store.get(operation_id)
    except PlatformError:
        return None
    if record.params.get("request") != fingerprint:
        raise InvalidArgumentError("request_id was used before with different parameters", field="request_id")
    return record


@dataclass
class Canceller:
    """How a service stops its own operations: what stages may still be cancelled, and its cleanup."""

    uncancellable_stages: frozenset[str] = frozenset({"publish", "done"})
    discard: Callable[[OperationRecord], None] | None = None


@dataclass
class OperationsServicer(operations_pb2_grpc.OperationsServiceServicer):
    """Get / Watch / Cancel / List over the shared store; Cancel revokes the record's Celery tasks."""

    store: OperationStore
    app: Celery | None
    settings: PlatformSettings
    shutdown: asyncio.Event
    cancellers: dict[str, Canceller] = field(default_factory=dict)  # kind -> how to cancel it

    def message(self, record: OperationRecord) -> common_pb2.Operation:
        return operation_message(record, self.store.progress(record))

    def _get(self, operation_id: str) -> common_pb2.Operation:
        return self.message(self.store.get(operation_id))

    async def GetOperation(self, request, context):  # noqa: ANN001, ANN201, N802 - gRPC API
        return operations_pb2.GetOperationResponse(operation=await asyncio.to_thread(self._get, request.operation_id))

    async def WatchOperation(self, request, context) -> AsyncIterator[Any]:  # noqa: ANN001, N802
        last = None
        while True:
            operation = await asyncio.to_thread(self._get, request.operation_id)
            snapshot = (operation.state, operation.stage, round(operation.progress, 4))
            if snapshot != last:
                last = snapshot
                yield operations_pb2.WatchOperationResponse(operation=operation)
            if operation.state in TERMINAL_WIRE_STATES:
                return
            try:
                await asyncio.wait_for(self.shutdown.wait(), timeout=self.settings.watch_poll_s)
            except TimeoutError:
                continue
            raise UnavailableError("server is shutting down; watch the operation again", field="operation_id")

    def _cancel(self, operation_id: str) -> common_pb2.Operation:
        refusal: list[PlatformError] = []
        kind = self.store.get(operation_id).kind
        canceller = self.cancellers.get(kind, Canceller())

        def cancel(record: OperationRecord) -> OperationRecord | None:
            if record.terminal:
                refusal.append(FailedPreconditionError(f"operation is already {record.state.value}",
                                                       field="operation_id"))
                return None
            if record.stage in canceller.uncancellable_stages:
                refusal.append(FailedPreconditionError(
                    f"operation is in stage {record.stage!r}; it can no longer be cancelled", field="operation_id"))
                return None
            return record.model_copy(update={"state": OperationState.CANCELLED,
                                             "error": CancelledError("cancelled by a client").to_dict()})

        record = self.store.update(operation_id, cancel)
        if refusal:
            raise refusal[0]
        if self.app is not None and record.task_ids:
            try:
                self.app.control.revoke(record.task_ids)
            except Exception:  # tasks also check the state themselves; revoke only saves work
                log.exception("revoke failed", extra={"operation_id": operation_id})
        if canceller.discard is not None:
            try:
                canceller.discard(record)
            except Exception:  # unpublished files are invisible without a manifest
                log.exception("discard failed", extra={"operation_id": operation_id})
        log.info("operation cancelled", extra={"operation_id": operation_id, "kind": kind})
        return self.message(record)

    async def CancelOperation(self, request, context):  # noqa: ANN001, ANN201, N802
        operation = await asyncio.to_thread(self._cancel, request.operation_id)
        return operations_pb2.CancelOperationResponse(operation=operation)

    def _list(self, kind: str, limit: int) -> list[common_pb2.Operation]:
        if limit < 0:
            raise InvalidArgumentError(f"limit must be >= 0, got {limit}", field="limit")
        messages = []
        for operation_id in reversed(self.store.list_ids()):
            try:
                record = self.store.get(operation_id)
            except PlatformError:
                continue
            if kind and record.kind != kind:
                continue
            messages.append(self.message(record))
            if len(messages) >= (limit or 100):
                break
        return messages

    async def ListOperations(self, request, context):  # noqa: ANN001, ANN201, N802
        operations = await asyncio.to_thread(self._list, request.kind, request.limit)
        return operations_pb2.ListOperationsResponse(operations=operations)


@dataclass
class ServiceContext:
    """What a service's servicer gets: settings, the operation store, the Celery app, the shutdown event."""

    settings: PlatformSettings
    operations: OperationStore
    app: Celery
    shutdown: asyncio.Event


async def serve_service(
    settings: PlatformSettings,
    *,
    name: str,
    grpc_service: str,
    add_servicer: Callable[[Any, grpc.aio.Server], None],
    make_servicer: Callable[[ServiceContext], Any],
    cancellers: dict[str, Canceller] | None = None,
    resenders: dict[str, Callable[[Celery, OperationRecord], None]] | None = None,
) -> None:
    """Run one service until SIGTERM: its servicer plus OperationsService, health, reflection, /metrics,
    and the stall watchdog over its kinds (`resenders`: kind -> how to re-send a stalled operation)."""
    operations = open_operation_store(settings)
    REGISTRY.register(OperationsCollector(operations))
    metrics_port = start_metrics_server(settings.metrics_host, settings.metrics_port)
    shutdown = asyncio.Event()
    app = create_celery_app(settings)
    ctx = ServiceContext(settings=settings, operations=operations, app=app, shutdown=shutdown)
    servicer = make_servicer(ctx)
    operations_servicer = OperationsServicer(operations, app, settings, shutdown, dict(cancellers or {}))

    def register(server: grpc.aio.Server) -> None:
        add_servicer(servicer, server)
        operations_pb2_grpc.add_OperationsServiceServicer_to_server(operations_servicer, server)

    server, health, port = await build_server(register, [grpc_service, OPERATIONS_SERVICE_NAME],
                                              settings.grpc_host, settings.grpc_port)
    log.info(f"{name} serving", extra={"grpc_port": port, "metrics_port": metrics_port,
                                       "broker": "filesystem" if settings.embedded_broker else "redis"})
    watchdog = StallWatchdog(
        operations, {kind: functools.partial(resend, app) for kind, resend in (resenders or {}).items()}, stall_s=settings.stall_s, max_resends=settings.stall_max_resends,
        discards={kind: c.discard for kind, c in (cancellers or {}).items() if c.discard is not None})
    watching = asyncio.create_task(watchdog.run(shutdown))
    try:
        await serve_until_signal(server, health, settings.shutdown_grace_s, on_shutdown=shutdown.set)
    finally:
        shutdown.set()
        await watching


@dataclass
class PreparedStart:
    """What a service's Start prepared after validating: the record's plan and units, and how to send it."""

    plan: dict[str, Any]  # JSON; stored as record.params["plan"]
    send: Callable[[], None]  # sends the work to the broker
    units: int = 1
    task_ids: list[str] = field(default_factory=list)
    abandon: Callable[[], None] = lambda: None  # undo what preparing claimed (a version) when it is not sent
    log_fields: dict[str, Any] = field(default_factory=dict)


def start_operation(store: OperationStore, kind: str, request: Any,
                    prepare: Callable[[str, dict[str, Any]], PreparedStart]) -> OperationRecord:
    """Every Start*: idempotency key -> the existing operation (same parameters) or validate and prepare
    (`prepare(operation_id, request as JSON)` raises INVALID_ARGUMENT / NOT_FOUND before anything is
    stored) -> create the record atomically -> send the work (a refusing broker fails the operation
    with UNAVAILABLE and abandons what was prepared)."""
    fingerprint = request_fingerprint(request)
    operation_id = operation_id_for(kind, request.request_id)
    if request.request_id:
        existing = existing_operation(store, operation_id, fingerprint)
        if existing is not None:
            return existing
    prepared = prepare(operation_id, fingerprint)
    record = OperationRecord(id=operation_id, kind=kind, units=prepared.units, task_ids=prepared.task_ids,
                             params={"plan": prepared.plan, "request": fingerprint})
    if not store.create(record):  # a concurrent call with the same request_id won
        prepared.abandon()
        return store.get(operation_id)
    try:
        prepared.send()
    except Exception as exc:
        error = fail_start(store, operation_id, exc, kind)
        prepared.abandon()
        raise error from exc
    log.info(f"{kind} started", extra={"operation_id": operation_id, **prepared.log_fields})
    return record


class StartServicer:
    """What every service's servicer shares: its context (`ctx.operations`), its Celery app, Start, the wire form."""

    def __init__(self, ctx: Any, app: Celery) -> None:
        self.ctx = ctx
        self.app = app

    @property
    def operations(self) -> OperationStore:
        return self.ctx.operations

    def _message(self, record: OperationRecord) -> common_pb2.Operation:
        return operation_message(record, self.operations.progress(record))

    def _start_operation(self, kind: str, request: Any,
                         prepare: Callable[[str, dict[str, Any]], PreparedStart]) -> common_pb2.Operation:
        return self._message(start_operation(self.operations, kind, request, prepare))


def run_main(serve: Callable[[PlatformSettings], Awaitable[None]], settings: PlatformSettings | None = None) -> None:
    """A service's `main`: settings from the environment, logging, then `serve` until SIGTERM."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


def fail_start(store: OperationStore, operation_id: str, exc: BaseException, what: str) -> UnavailableError:
    """The broker refused the work: mark the operation FAILED and return the error to raise."""
    error = UnavailableError(f"could not send the {what} to the broker: {exc}")
    store.fail(operation_id, error)
    return error
