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
from collections.abc import Callable

from celery import Celery

from services.common.operation_api import (
    Canceller,
    PreparedStart,
    ServiceContext,
    StartServicer,
    run_main,
    serve_service,
)
from services.common.operations import OperationRecord, open_operation_store
from services.common.proto import common_pb2, projector_pb2, projector_pb2_grpc
from services.common.settings import PlatformSettings
from services.common.storage import CheckpointStore, open_object_store
from services.projector.pipeline import ProjectionPlan, ProjectorContext, plan_projection
from services.projector.tasks import build_workflow, discard_outputs, resend

log = logging.getLogger(__name__)
SERVICE_NAME = projector_pb2.DESCRIPTOR.services_by_name["ProjectorService"].full_name
OPERATION_KIND = "projection"


class ProjectorServicer(StartServicer, projector_pb2_grpc.ProjectorServiceServicer):
    """Handlers raise PlatformError; the interceptor maps it to the status code (services.common.errors)."""

    def __init__(self, settings: PlatformSettings, ctx: ProjectorContext, app: Celery, shutdown: asyncio.Event) -> None:
        super().__init__(ctx, app)
        self.settings = settings
        self.shutdown = shutdown

    # ---- StartProjection ------------------------------------------------------------------
    def _prepare(self, request: projector_pb2.StartProjectionRequest, operation_id: str) -> PreparedStart:
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
        return PreparedStart(
            plan=plan.model_dump(mode="json"), send=workflow.apply_async, units=len(plan.units()), task_ids=task_ids,
            abandon=lambda: self.ctx.checkpoints.discard(plan.student_name, version),  # nothing else exists yet
            log_fields={"teacher": f"{plan.teacher_name}/{plan.teacher_version}", "student": f"{plan.student_name}/"
                        f"{version}", "width": plan.width, "tables": len(plan.tables), "tasks": len(task_ids)})

    def _start(self, request: projector_pb2.StartProjectionRequest) -> common_pb2.Operation:
        return self._start_operation(OPERATION_KIND, request,
                                     lambda operation_id, _: self._prepare(request, operation_id))

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
    run_main(serve, settings)


if __name__ == "__main__":
    main()
