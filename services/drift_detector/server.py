"""The drift-detector's gRPC service: ComputeDrift (an operation), UpdateDrift and GetDrift (live states).

ComputeDrift validates synchronously (NOT_FOUND for a dataset; INVALID_ARGUMENT for the config or a
stream whose feature spec or vocabulary is not the reference's), records the operation and sends
its first task; get / watch / cancel it through OperationsService. UpdateDrift and GetDrift answer
directly from the live states in the store (services.drift_detector.live), whose per-feature
divergences this server exports as Prometheus gauges (services.drift_detector.metrics).

    crossadapt serve drift-detector     # CROSSADAPT_GRPC_PORT, CROSSADAPT_METRICS_PORT, ...
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from google.protobuf.json_format import ParseDict
from prometheus_client import REGISTRY

from services.common.operation_api import (
    Canceller,
    PreparedStart,
    ServiceContext,
    StartServicer,
    request_fingerprint,
    run_main,
    serve_service,
)
from services.common.operations import OperationRecord, open_operation_store
from services.common.proto import common_pb2, drift_detector_pb2, drift_detector_pb2_grpc
from services.common.settings import PlatformSettings
from services.common.storage import DatasetStore, open_object_store
from services.drift_detector.live import LiveDrift, LiveHead, state_lock
from services.drift_detector.metrics import DriftCollector
from services.drift_detector.pipeline import (
    DriftContext,
    DriftSettings,
    drift_settings,
    plan_drift,
    plan_from_record,
    settings_message_fields,
)
from services.drift_detector.spec import SPEC
from services.drift_detector.tasks import build_workflow, discard_outputs, resend

log = logging.getLogger(__name__)
OPERATION_KIND = "drift"


def state_message(head: LiveHead) -> drift_detector_pb2.DriftState:
    """A live state in its wire form."""
    message = drift_detector_pb2.DriftState(
        name=head.name, replay_ratio=head.replay_ratio, shift=head.shift, source=head.source, rows=head.rows,
        windows=head.windows, partitions=head.partitions, reference=common_pb2.DatasetRef(name=head.reference),
        reference_shift=head.reference_report.shift,
        features=[drift_detector_pb2.FeatureDivergence(
            feature=f.name, kind=f.kind, mean=f.mean, max=f.max, raw_mean=f.raw_mean or 0.0,
            floor_mean=f.floor_mean or 0.0) for f in head.features],
    )
    ParseDict(settings_message_fields(head.settings), message.config)
    message.update_time.FromNanoseconds(int(head.updated_at * 1e9))
    return message


class DriftDetectorServicer(StartServicer, drift_detector_pb2_grpc.DriftDetectorServiceServicer):
    """Handlers raise PlatformError; the interceptor maps it to the status code (services.common.errors)."""

    def __init__(self, ctx: DriftContext, live: LiveDrift, app: Celery) -> None:
        super().__init__(ctx, app)
        self.live = live

    # ---- ComputeDrift -------------------------------------------------------------------------
    def _prepare(self, request: drift_detector_pb2.ComputeDriftRequest, operation_id: str,
                 fingerprint: dict[str, Any]) -> PreparedStart:
        settings = drift_settings(fingerprint.get("config", {}))
        plan = plan_drift(self.ctx.datasets, operation_id=operation_id, reference=request.reference.name,
                          stream=request.stream.name, settings=settings,
                          positions=(request.reference.HasField("position"), request.stream.HasField("position")))
        first, task_ids = build_workflow(self.app, plan)
        return PreparedStart(plan=plan.model_dump(mode="json"), send=first.apply_async,
                             units=len(plan.initial_units()), task_ids=task_ids, log_fields={
                                 "reference": plan.reference, "stream": plan.stream,
                                 "metric": settings.drift.metric, "windows": settings.drift.windows})

    def _compute(self, request: drift_detector_pb2.ComputeDriftRequest) -> common_pb2.Operation:
        return self._start_operation(OPERATION_KIND, request,
                                     lambda operation_id, fp: self._prepare(request, operation_id, fp))

    async def ComputeDrift(self, request, context):  # noqa: ANN001, ANN201, N802 - gRPC API
        operation = await asyncio.to_thread(self._compute, request)
        return drift_detector_pb2.ComputeDriftResponse(operation=operation)

    # ---- live states -----------------------------------------------------------------------------
    def _update(self, request: drift_detector_pb2.UpdateDriftRequest) -> drift_detector_pb2.DriftState:
        settings: DriftSettings | None = None
        if request.HasField("config"):
            settings = drift_settings(request_fingerprint(request).get("config", {}))
        head = self.live.update(request.name, request.partition.name, request.partition.position.partition,
                                reference=request.reference.name, settings=settings)
        log.info("live drift updated", extra={"state": head.name, "partitions": len(head.partitions),
                                              "shift": head.shift, "replay_ratio": head.replay_ratio})
        return state_message(head)

    async def UpdateDrift(self, request, context):  # noqa: ANN001, ANN201, N802
        state = await asyncio.to_thread(self._update, request)
        return drift_detector_pb2.UpdateDriftResponse(state=state)

    async def GetDrift(self, request, context):  # noqa: ANN001, ANN201, N802
        head = await asyncio.to_thread(self.live.get, request.name)
        return drift_detector_pb2.GetDriftResponse(state=state_message(head))


def _discard(ctx: DriftContext) -> Callable[[OperationRecord], None]:
    return lambda record: discard_outputs(ctx, plan_from_record(record.params))


async def serve(settings: PlatformSettings) -> None:
    """Run the drift-detector until SIGTERM (then drain for `shutdown_grace_s`)."""
    datasets = DatasetStore(open_object_store(settings))
    live = LiveDrift(datasets, state_lock(settings))
    REGISTRY.register(DriftCollector(live))

    def make_servicer(service: ServiceContext) -> DriftDetectorServicer:
        return DriftDetectorServicer(DriftContext(datasets=datasets, operations=service.operations), live, service.app)

    cancel_ctx = DriftContext(datasets=datasets, operations=open_operation_store(settings))
    await serve_service(
        settings, name=SPEC.name, grpc_service=str(SPEC.grpc_service),
        add_servicer=drift_detector_pb2_grpc.add_DriftDetectorServiceServicer_to_server, make_servicer=make_servicer,
        cancellers={OPERATION_KIND: Canceller(uncancellable_stages=frozenset({"done"}), discard=_discard(cancel_ctx))},
        resenders={OPERATION_KIND: resend},
    )


def main(settings: PlatformSettings | None = None) -> None:
    run_main(serve, settings)


if __name__ == "__main__":
    main()
