"""The projector's gRPC service: start a projection, then get / watch / cancel its operation.

StartProjection validates synchronously (NOT_FOUND, INVALID_ARGUMENT naming the field), claims the
student's next version, records the operation and sends the Celery workflow. Operation state lives
in the operation store, not in this process, so any replica, or this one after a restart, answers
Get/Watch for any operation.

    crossadapt serve projector     # CROSSADAPT_GRPC_PORT, CROSSADAPT_METRICS_PORT, ... (services.common.settings)
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

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
from services.common.logs import configure_logging
from services.common.metrics import OperationsCollector, start_metrics_server
from services.common.operations import OperationRecord, OperationState, OperationStore, open_operation_store
from services.common.proto import common_pb2, projector_pb2, projector_pb2_grpc
from services.common.settings import PlatformSettings, get_settings
from services.common.storage import CheckpointStore, open_object_store
from services.projector.pipeline import ProjectionPlan, ProjectorContext, plan_projection
from services.projector.tasks import build_workflow, discard_outputs

log = logging.getLogger(__name__)
SERVICE_NAME = projector_pb2.DESCRIPTOR.services_by_name["ProjectorService"].full_name
OPERATION_KIND = "projection"
_REQUEST_NAMESPACE = uuid.UUID("5b0f4a43-5e4e-4c55-9d0b-3a8f1f0c2d17")
_STATES = {
    OperationState.PENDING: common_pb2.OPERATION_STATE_PENDING,
    OperationState.RUNNING: common_pb2.OPERATION_STATE_RUNNING,
    OperationState.SUCCEEDED: common_pb2.OPERATION_STATE_SUCCEEDED,
    OperationState.FAILED: common_pb2.OPERATION_STATE_FAILED,
    OperationState.CANCELLED: common_pb2.OPERATION_STATE_CANCELLED,
}


def operation_message(record: OperationRecord, progress: float) -> common_pb2.Operation:
    """The wire form of an operation record."""
    message = common_pb2.Operation(
        id=record.id, kind=record.kind, state=_STATES[record.state], progress=progress, stage=record.stage
    )
    if record.error:
        error = PlatformError.from_dict(record.error)
        code = grpc_status(error)
        message.error.CopyFrom(common_pb2.OperationError(
            code=grpc_code_number(code), code_name=code.name, message=error.message, field=error.field or ""
        ))
    if record.result:
        message.checkpoint.CopyFrom(common_pb2.CheckpointRef(name=record.result["name"], version=record.result["version"]))
    message.create_time.FromNanoseconds(int(record.created_at * 1e9))
    message.update_time.FromNanoseconds(int(record.updated_at * 1e9))
    return message


class ProjectorServicer(projector_pb2_grpc.ProjectorServiceServicer):
    """Handlers raise PlatformError; the interceptor maps it to the status code (services.common.errors)."""

    def __init__(self, settings: PlatformSettings, ctx: ProjectorContext, app: Celery, shutdown: asyncio.Event) -> None:
        self.settings = settings
        self.ctx = ctx
        self.app = app
        self.shutdown = shutdown

    @property
    def operations(self) -> OperationStore:
        return self.ctx.operations

    def _message(self, record: OperationRecord) -> common_pb2.Operation:
        return operation_message(record, self.operations.progress(record))

    # ---- StartProjection ------------------------------------------------------------------
    def _start(self, request: projector_pb2.StartProjectionRequest) -> common_pb2.Operation:
        request_dict: dict[str, Any] = MessageToDict(request, preserving_proto_field_name=True)
        operation_id = uuid.uuid5(_REQUEST_NAMESPACE, request.request_id).hex if request.request_id else uuid.uuid4().hex
        if request.request_id:
            existing = self._existing(operation_id, request_dict)
            if existing is not None:
                return existing
        plan = plan_projection(
            self.ctx.checkpoints,
            operation_id=operation_id,
            teacher_name=request.teacher.name,
            teacher_version=request.teacher.version,
            student_name=request.student_name,
            width=request.width,
            seed=request.seed,
            fields=list(request.fields),
            vocab_hash=request.vocab_hash,
            vocab_sizes=dict(request.vocab_sizes),
        )
        version = self.ctx.checkpoints.claim_version(plan.student_name, owner=operation_id)
        plan = plan.model_copy(update={"student_version": version})
        workflow, task_ids = build_workflow(self.app, plan)
        record = OperationRecord(
            id=operation_id, kind=OPERATION_KIND, units=len(plan.units()), task_ids=task_ids,
            params={"plan": plan.model_dump(mode="json"), "request": request_dict},
        )
        if not self.operations.create(record):  # a concurrent call with the same request_id won
            self.ctx.checkpoints.discard(plan.student_name, version)
            return self._message(self.operations.get(operation_id))
        try:
            workflow.apply_async()
        except Exception as exc:
            error = UnavailableError(f"could not send the projection to the broker: {exc}")
            self.operations.fail(operation_id, error)
            discard_outputs(self.ctx, plan)
            raise error from exc
        log.info("projection started", extra={"operation_id": operation_id, "teacher": f"{plan.teacher_name}/"
                 f"{plan.teacher_version}", "student": f"{plan.student_name}/{version}", "width": plan.width,
                 "tables": len(plan.tables), "tasks": len(task_ids)})
        return self._message(record)

    def _existing(self, operation_id: str, request_dict: dict[str, Any]) -> common_pb2.Operation | None:
        try:
            record = self.operations.get(operation_id)
        except PlatformError:
            return None
        if record.params.get("request") != request_dict:
            raise InvalidArgumentError("request_id was used before with different parameters", field="request_id")
        return self._message(record)

    async def StartProjection(self, request, context):  # noqa: ANN001, ANN201, N802 - gRPC API
        operation = await asyncio.to_thread(self._start, request)
        return projector_pb2.StartProjectionResponse(operation=operation)

    # ---- Get / Watch ----------------------------------------------------------------------
    def _get(self, operation_id: str) -> common_pb2.Operation:
        return self._message(self.operations.get(operation_id))

    async def GetOperation(self, request, context):  # noqa: ANN001, ANN201, N802
        return projector_pb2.GetOperationResponse(operation=await asyncio.to_thread(self._get, request.operation_id))

    async def WatchOperation(self, request, context) -> AsyncIterator[Any]:  # noqa: ANN001, N802
        last = None
        while True:
            operation = await asyncio.to_thread(self._get, request.operation_id)
            snapshot = (operation.state, operation.stage, round(operation.progress, 4))
            if snapshot != last:
                last = snapshot
                yield projector_pb2.WatchOperationResponse(operation=operation)
            if operation.state in (common_pb2.OPERATION_STATE_SUCCEEDED, common_pb2.OPERATION_STATE_FAILED,
                                   common_pb2.OPERATION_STATE_CANCELLED):
                return
            try:
                await asyncio.wait_for(self.shutdown.wait(), timeout=self.settings.watch_poll_s)
            except TimeoutError:
                continue
            raise UnavailableError("server is shutting down; watch the operation again", field="operation_id")

    # ---- Cancel ---------------------------------------------------------------------------
    def _cancel(self, operation_id: str) -> common_pb2.Operation:
        refusal: list[PlatformError] = []

        def cancel(record: OperationRecord) -> OperationRecord | None:
            if record.terminal:
                refusal.append(FailedPreconditionError(f"operation is already {record.state.value}", field="operation_id"))
                return None
            if record.stage in ("publish", "done"):
                refusal.append(FailedPreconditionError("operation is publishing; it can no longer be cancelled",
                                                       field="operation_id"))
                return None
            return record.model_copy(update={"state": OperationState.CANCELLED,
                                             "error": CancelledError("cancelled by a client").to_dict()})

        record = self.operations.update(operation_id, cancel)
        if refusal:
            raise refusal[0]
        try:
            self.app.control.revoke(record.task_ids)
        except Exception:  # tasks also check the state themselves; revoke only saves work
            log.exception("revoke failed", extra={"operation_id": operation_id})
        discard_outputs(self.ctx, ProjectionPlan.model_validate(record.params["plan"]))
        log.info("operation cancelled", extra={"operation_id": operation_id})
        return self._message(record)

    async def CancelOperation(self, request, context):  # noqa: ANN001, ANN201, N802
        operation = await asyncio.to_thread(self._cancel, request.operation_id)
        return projector_pb2.CancelOperationResponse(operation=operation)


async def serve(settings: PlatformSettings) -> None:
    """Run the projector until SIGTERM (then drain for `shutdown_grace_s`)."""
    operations = open_operation_store(settings)
    ctx = ProjectorContext(checkpoints=CheckpointStore(open_object_store(settings)), operations=operations)
    REGISTRY.register(OperationsCollector(operations))
    metrics_port = start_metrics_server(settings.metrics_host, settings.metrics_port)
    shutdown = asyncio.Event()
    servicer = ProjectorServicer(settings, ctx, create_celery_app(settings), shutdown)
    server, health, port = await build_server(
        lambda s: projector_pb2_grpc.add_ProjectorServiceServicer_to_server(servicer, s),
        [SERVICE_NAME], settings.grpc_host, settings.grpc_port,
    )
    log.info("projector serving", extra={"grpc_port": port, "metrics_port": metrics_port,
                                          "broker": "filesystem" if settings.embedded_broker else "redis"})
    await serve_until_signal(server, health, settings.shutdown_grace_s, on_shutdown=shutdown.set)


def main(settings: PlatformSettings | None = None) -> None:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
