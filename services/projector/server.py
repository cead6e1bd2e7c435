"""The projector's gRPC service: start a projection; get / watch / cancel it through OperationsService.

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
from collections.abc import Callable
from typing import Any

from celery import Celery
from google.protobuf.json_format import MessageToDict

from services.common.errors import InvalidArgumentError, PlatformError
from services.common.logs import configure_logging
from services.common.operation_api import Canceller, ServiceContext, fail_start, operation_message, serve_service
from services.common.operations import OperationRecord, OperationStore, open_operation_store
from services.common.proto import common_pb2, projector_pb2, projector_pb2_grpc
from services.common.settings import PlatformSettings, get_settings
from services.common.storage import CheckpointStore, open_object_store
from services.projector.pipeline import ProjectionPlan, ProjectorContext, plan_projection
from services.projector.tasks import build_workflow, discard_outputs, resend

log = logging.getLogger(__name__)
SERVICE_NAME = projector_pb2.DESCRIPTOR.services_by_name["ProjectorService"].full_name
OPERATION_KIND = "projection"
_REQUEST_NAMESPACE = uuid.UUID("5b0f4a43-5e4e-4c55-9d0b-3a8f1f0c2d17")


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
            error = fail_start(self.operations, operation_id, exc, "projection")
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


def _discard(ctx: ProjectorContext) -> Callable[[OperationRecord], None]:
    return lambda record: discard_outputs(ctx, ProjectionPlan.model_validate(record.params["plan"]))


async def serve(settings: PlatformSettings) -> None:
    """Run the projector until SIGTERM (then drain for `shutdown_grace_s`)."""
    checkpoints = CheckpointStore(open_object_store(settings))

    def make_servicer(service: ServiceContext) -> ProjectorServicer:
        ctx = ProjectorContext(checkpoints=checkpoints, operations=service.operations)
        return ProjectorServicer(settings, ctx, service.app, service.shutdown)

    await serve_service(
        settings, name="projector", grpc_service=SERVICE_NAME,
        add_servicer=projector_pb2_grpc.add_ProjectorServiceServicer_to_server, make_servicer=make_servicer,
        cancellers={OPERATION_KIND: Canceller(discard=_discard(
            ProjectorContext(checkpoints=checkpoints, operations=open_operation_store(settings))))},
        resenders={OPERATION_KIND: resend},
    )


def main(settings: PlatformSettings | None = None) -> None:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
