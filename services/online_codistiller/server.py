"""The online co-distiller's gRPC service: start a co-distillation; get / watch / cancel it through OperationsService.

StartCoDistillation validates synchronously (services.online_codistiller.plan: NOT_FOUND,
INVALID_ARGUMENT, FAILED_PRECONDITION naming the field), records the operation (idempotent on
`request_id`) and sends the Celery task. Cancelling stops the stream at its next batch; the student
and teacher versions published so far stay (each is a complete checkpoint).

    crossadapt serve online-codistiller     # CROSSADAPT_GRPC_PORT, CROSSADAPT_METRICS_PORT, ...
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
from services.common.proto import common_pb2, online_codistiller_pb2, online_codistiller_pb2_grpc
from services.common.settings import PlatformSettings
from services.common.storage import CheckpointStore, DatasetStore, open_object_store
from services.online_codistiller.context import CoDistillerContext
from services.online_codistiller.plan import plan_codistillation
from services.online_codistiller.spec import SPEC
from services.online_codistiller.tasks import launch, task_id

log = logging.getLogger(__name__)
OPERATION_KIND = "codistillation"


class OnlineCoDistillerServicer(StartServicer, online_codistiller_pb2_grpc.OnlineCoDistillerServiceServicer):
    """Handlers raise PlatformError; the interceptor maps it to the status code (services.common.errors)."""

    def _prepare(self, request: online_codistiller_pb2.StartCoDistillationRequest, operation_id: str) -> PreparedStart:
        plan = plan_codistillation(self.ctx.checkpoints, self.ctx.datasets, request, operation_id)
        return PreparedStart(
            plan=plan.model_dump(mode="json"), send=lambda: launch(self.app, operation_id),
            task_ids=[task_id(operation_id)],
            log_fields={"student": plan.student.ref, "teacher": plan.teacher.ref, "stream": plan.stream,
                        "replay": plan.replay, "follow": plan.follow})

    def _start(self, request: online_codistiller_pb2.StartCoDistillationRequest) -> common_pb2.Operation:
        return self._start_operation(OPERATION_KIND, request,
                                     lambda operation_id, _: self._prepare(request, operation_id))

    async def StartCoDistillation(self, request, context):  # noqa: ANN001, ANN201, N802 - gRPC API
        operation = await asyncio.to_thread(self._start, request)
        return online_codistiller_pb2.StartCoDistillationResponse(operation=operation)


async def serve(settings: PlatformSettings) -> None:
    """Run the online co-distiller until SIGTERM (then drain for `shutdown_grace_s`)."""
    objects = open_object_store(settings)

    def make_servicer(service: ServiceContext) -> OnlineCoDistillerServicer:
        ctx = CoDistillerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                                 operations=service.operations)
        return OnlineCoDistillerServicer(ctx, service.app)

    await serve_service(
        settings, name=SPEC.name, grpc_service=SPEC.grpc_service or "",
        add_servicer=online_codistiller_pb2_grpc.add_OnlineCoDistillerServiceServicer_to_server,
        make_servicer=make_servicer,
        # A following co-distillation never reaches "done" by itself: cancelling it is how it stops.
        cancellers={OPERATION_KIND: Canceller(uncancellable_stages=frozenset({"publish", "done"}))},
        # A stalled training is re-sent whole: the task resumes from its last checkpoint, and the lease
        # keeps a copy that was not lost after all from training twice.
        resenders={OPERATION_KIND: lambda app, record: launch(app, record.id)},
    )


def main(settings: PlatformSettings | None = None) -> None:
    run_main(serve, settings)


if __name__ == "__main__":
    main()
