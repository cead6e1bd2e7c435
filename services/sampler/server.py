"""The sampler's gRPC service: start a sampling; get / watch / cancel it through OperationsService.

StartSampling validates synchronously (NOT_FOUND for the dataset or teacher; INVALID_ARGUMENT for
the config, the teacher's vocabulary or feature spec against the dataset's; ALREADY_EXISTS for a
taken sample name), records the operation and sends the Celery workflow. Operation state lives in
the operation store, so any replica, or this one after a restart, answers for any operation.

    crossadapt serve sampler     # CROSSADAPT_GRPC_PORT, CROSSADAPT_METRICS_PORT, ... (services.common.settings)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery

from services.common.operation_api import (
    Canceller,
    ServiceContext,
    PreparedStart,
    StartServicer,
    run_main,
    serve_service,
)
from services.common.operations import OperationRecord, open_operation_store
from services.common.proto import common_pb2, sampler_pb2, sampler_pb2_grpc
from services.common.settings import PlatformSettings
from services.common.storage import CheckpointStore, DatasetStore, open_object_store
from services.sampler.pipeline import SamplerContext, plan_from_record, plan_sampling, sampling_config
from services.sampler.spec import SPEC
from services.sampler.tasks import build_workflow, discard_outputs, resend

log = logging.getLogger(__name__)
OPERATION_KIND = "sampling"


class SamplerServicer(StartServicer, sampler_pb2_grpc.SamplerServiceServicer):
    """Handlers raise PlatformError; the interceptor maps it to the status code (services.common.errors)."""

    def _prepare(self, request: sampler_pb2.StartSamplingRequest, operation_id: str,
                 fingerprint: dict[str, Any]) -> PreparedStart:
        config, target = sampling_config(fingerprint.get("config", {}))
        plan = plan_sampling(
            self.ctx.checkpoints, self.ctx.datasets, operation_id=operation_id, dataset=request.dataset.name,
            teacher_name=request.teacher.name, teacher_version=request.teacher.version,
            sample_name=request.sample_name, config=config, target=target,
            dataset_position=request.dataset.HasField("position"),
        )
        workflow, task_ids = build_workflow(self.app, plan)
        return PreparedStart(plan=plan.model_dump(mode="json"), send=workflow.apply_async, units=len(plan.units()),
                             task_ids=task_ids, log_fields={
                                 "dataset": plan.dataset, "teacher": plan.teacher_ref, "sample": plan.sample_name,
                                 "blocks": plan.blocks, "ratio": plan.config.ratio, "target": plan.target})

    def _start(self, request: sampler_pb2.StartSamplingRequest) -> common_pb2.Operation:
        return self._start_operation(OPERATION_KIND, request,
                                     lambda operation_id, fp: self._prepare(request, operation_id, fp))

    async def StartSampling(self, request, context):  # noqa: ANN001, ANN201, N802 - gRPC API
        operation = await asyncio.to_thread(self._start, request)
        return sampler_pb2.StartSamplingResponse(operation=operation)


def _discard(ctx: SamplerContext) -> Callable[[OperationRecord], None]:
    return lambda record: discard_outputs(ctx, plan_from_record(record.params))


async def serve(settings: PlatformSettings) -> None:
    """Run the sampler until SIGTERM (then drain for `shutdown_grace_s`)."""
    objects = open_object_store(settings)
    checkpoints, datasets = CheckpointStore(objects), DatasetStore(objects)

    def make_servicer(service: ServiceContext) -> SamplerServicer:
        ctx = SamplerContext(checkpoints=checkpoints, datasets=datasets, operations=service.operations)
        return SamplerServicer(ctx, service.app)

    cancel_ctx = SamplerContext(checkpoints=checkpoints, datasets=datasets, operations=open_operation_store(settings))
    await serve_service(
        settings, name=SPEC.name, grpc_service=str(SPEC.grpc_service),
        add_servicer=sampler_pb2_grpc.add_SamplerServiceServicer_to_server, make_servicer=make_servicer,
        cancellers={OPERATION_KIND: Canceller(discard=_discard(cancel_ctx))}, resenders={OPERATION_KIND: resend},
    )


def main(settings: PlatformSettings | None = None) -> None:
    run_main(serve, settings)


if __name__ == "__main__":
    main()
