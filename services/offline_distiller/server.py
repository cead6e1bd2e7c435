"""The offline-distiller's gRPC service: start a distillation; get / watch / cancel it through OperationsService.

StartDistillation validates synchronously (services.offline_distiller.plan: NOT_FOUND, INVALID_ARGUMENT,
FAILED_PRECONDITION naming the field), claims the student's next version, records the operation
(idempotent on `request_id`) and sends the Celery task. Operation state lives in the operation store,
so any replica answers Get/Watch/Cancel for any operation.

    crossadapt serve offline-distiller     # CROSSADAPT_GRPC_PORT, CROSSADAPT_METRICS_PORT, ...
"""

from __future__ import annotations

import asyncio
import logging

from celery import Celery

from services.common.operation_api import (
    Canceller,
    PreparedStart,
    ServiceContext,
    StartServicer,
    run_main,
    serve_service,
)
from services.common.operations import open_operation_store
from services.common.proto import common_pb2, offline_distiller_pb2, offline_distiller_pb2_grpc
from services.common.settings import PlatformSettings
from services.common.storage import CheckpointStore, DatasetStore, open_object_store
from services.offline_distiller.context import DistillerContext, discard_outputs
from services.offline_distiller.plan import plan_distillation
from services.offline_distiller.spec import SPEC
from services.offline_distiller.tasks import launch, load_plan, task_id

log = logging.getLogger(__name__)
OPERATION_KIND = "distillation"


class OfflineDistillerServicer(StartServicer, offline_distiller_pb2_grpc.OfflineDistillerServiceServicer):
    """Handlers raise PlatformError; the interceptor maps it to the status code (services.common.errors)."""

    def _prepare(self, request: offline_distiller_pb2.StartDistillationRequest, operation_id: str) -> PreparedStart:
        plan = plan_distillation(self.ctx.checkpoints, self.ctx.datasets, request, operation_id)
        version = self.ctx.checkpoints.claim_version(plan.student_name, owner=operation_id)
        plan = plan.model_copy(update={"student_version": version})
        return PreparedStart(
            plan=plan.model_dump(mode="json"), send=lambda: launch(self.app, operation_id),
            task_ids=[task_id(operation_id)],
            abandon=lambda: self.ctx.checkpoints.discard(plan.student_name, version),  # nothing else exists yet
            log_fields={"student": f"{plan.student_name}/{version}", "projected": plan.projected.ref,
                        "teacher": plan.teacher.ref, "sample": plan.sample, "world_size": plan.settings.world_size})

    def _start(self, request: offline_distiller_pb2.StartDistillationRequest) -> common_pb2.Operation:
        return self._start_operation(OPERATION_KIND, request,
                                     lambda operation_id, _: self._prepare(request, operation_id))

    async def StartDistillation(self, request, context):  # noqa: ANN001, ANN201, N802 - gRPC API
        operation = await asyncio.to_thread(self._start, request)
        return offline_distiller_pb2.StartDistillationResponse(operation=operation)


def _context(settings: PlatformSettings, operations=None) -> DistillerContext:  # noqa: ANN001
    objects = open_object_store(settings)
    return DistillerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                            operations=operations or open_operation_store(settings))


async def serve(settings: PlatformSettings) -> None:
    """Run the offline-distiller until SIGTERM (then drain for `shutdown_grace_s`)."""
    cancel_ctx = _context(settings)

    def make_servicer(service: ServiceContext) -> OfflineDistillerServicer:
        return OfflineDistillerServicer(_context(settings, service.operations), service.app)

    await serve_service(
        settings, name=SPEC.name, grpc_service=SPEC.grpc_service or "",
        add_servicer=offline_distiller_pb2_grpc.add_OfflineDistillerServiceServicer_to_server,
        make_servicer=make_servicer,
        cancellers={OPERATION_KIND: Canceller(discard=lambda record: discard_outputs(cancel_ctx, load_plan(record.params)))},
        # A stalled training is re-sent whole: the task resumes from its last checkpoint, and the lease
        # keeps a copy that was not lost after all from training twice.
        resenders={OPERATION_KIND: lambda app, record: launch(app, record.id)},
    )


def main(settings: PlatformSettings | None = None) -> None:
    run_main(serve, settings)


if __name__ == "__main__":
    main()
