"""`crossadapt serve predictor`: KServe inference (REST + V2 gRPC) and the admin gRPC API, one process.

    CROSSADAPT_PREDICTOR_TEACHER=ctr/teacher CROSSADAPT_PREDICTOR_STUDENT=ctr/student crossadapt serve predictor

Ports: KServe REST `CROSSADAPT_PREDICTOR_HTTP_PORT` (8080) and V2 gRPC
`CROSSADAPT_PREDICTOR_INFERENCE_GRPC_PORT` (8081) on `CROSSADAPT_PREDICTOR_HOST`; the admin API on
`CROSSADAPT_GRPC_HOST:CROSSADAPT_GRPC_PORT` (50056 in images) with health and reflection;
Prometheus on `CROSSADAPT_METRICS_PORT` (and KServe's /metrics on the REST port).

A teacher or student checkpoint that does not exist yet does not stop the start: the servers listen
with the model not ready (V2 server/model ready false, inference 503 / UNAVAILABLE), the store is
looked at again with back-off and each look's reason is logged; the model turns ready when both load.
A checkpoint that exists but cannot serve (e.g. no vocabulary) exits 1 naming why.

On SIGTERM: the admin health turns NOT_SERVING, KServe's servers drain, waiting shadow work
finishes (up to the grace period) and the exposure log is flushed to the store.
"""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
import torch
from fastapi import FastAPI
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from kserve.protocol.rest.server import RESTServer
from prometheus_client import REGISTRY
from pydantic import ValidationError

from services.common.errors import NotFoundError, PlatformError
from services.common.grpc_server import PlatformInterceptor
from services.common.logs import configure_logging
from services.common.metrics import start_metrics_server
from services.common.proto import predictor_pb2
from services.common.settings import PlatformSettings, get_settings
from services.common.storage import CheckpointStore, DatasetStore, ObjectStore, open_object_store
from services.predictor import wire
from services.predictor.admin import SERVICE_NAME, PredictorAdminServicer, add_admin_routes
from services.predictor.arms import ArmLoader
from services.predictor.engine import PredictorEngine
from services.predictor.kserve_server import PredictorModelServer, add_service
from services.predictor.model import PredictorModel
from services.predictor.prometheus import FiguresCollector
from services.predictor.rest import JsonInferRoute
from services.predictor.settings import PredictorSettings

log = logging.getLogger(__name__)


async def start_admin_server(engine: PredictorEngine, host: str, port: int) -> tuple[grpc.aio.Server, HealthServicer]:
    """The admin service with health (SERVING) and reflection, started on host:port."""
    server = grpc.aio.server(interceptors=[PlatformInterceptor()], options=[("grpc.so_reuseport", 0)])
    service = predictor_pb2.DESCRIPTOR.services_by_name["PredictorAdminService"]
    add_service(server, PredictorAdminServicer(engine), service, predictor_pb2)
    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    reflection.enable_server_reflection(
        [SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"could not bind the admin gRPC server to {host}:{port}")
    await server.start()
    return server, health


async def serve(settings: PlatformSettings, predictor: PredictorSettings) -> None:
    """Run until SIGTERM/SIGINT."""
    torch.set_num_threads(predictor.torch_threads)
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)  # two timing lines per REST request otherwise
    logging.captureWarnings(True)  # library warnings as log records (JSON lines), not raw stderr text
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):  # installed first: uvicorn restores and re-raises to these
        loop.add_signal_handler(sig, stop.set)
    objects = open_object_store(settings)
    model = PredictorModel(predictor.model_name)
    admin_routes = add_admin_routes(lambda: model.engine)

    def add_routes(app: FastAPI, rest: RESTServer) -> None:
        JsonInferRoute(model, rest.dataplane, rest.model_repository_extension).add_to(app)
        admin_routes(app)

    model_server = PredictorModelServer(host=predictor.host, http_port=predictor.http_port,
                                        grpc_port=predictor.inference_grpc_port, grace_s=settings.shutdown_grace_s,
                                        add_routes=add_routes)
    started: list[tuple[grpc.aio.Server, HealthServicer]] = []
    loading = asyncio.ensure_future(load_and_attach(settings, predictor, objects, model, started, stop))
    try:
        await model_server.serve([model], stop)
    finally:
        log.info("shutdown: draining")
        loading.cancel()
        await asyncio.gather(loading, return_exceptions=True)
        if loading.done() and not loading.cancelled() and isinstance(loading.exception(), PlatformError):
            raise loading.exception()
        for admin, health in started:
            await health.enter_graceful_shutdown()
            await admin.stop(settings.shutdown_grace_s)
        if model.engine is not None:
            await model.engine.close(timeout=settings.shutdown_grace_s)
        log.info("predictor stopped")


async def load_engine(predictor: PredictorSettings, loader: ArmLoader, datasets: DatasetStore,
                      stop: asyncio.Event) -> PredictorEngine | None:
    """Both arms, looking again with back-off while a checkpoint does not exist yet (None if stopped first).

    Only a missing checkpoint is waited for; one that exists but cannot serve still fails the start."""
    delay = predictor.checkpoint_poll_s
    while not stop.is_set():
        try:
            return await asyncio.to_thread(PredictorEngine, predictor, loader, datasets)
        except NotFoundError as exc:
            log.warning("predictor not ready: %s; looking again in %.1f s", exc, delay,
                        extra={"error": exc.to_dict(), "retry_in_s": delay})
        try:
            await asyncio.wait_for(stop.wait(), timeout=delay)
        except TimeoutError:
            pass
        delay = min(delay * 2, predictor.checkpoint_poll_max_s)
    return None


async def load_and_attach(settings: PlatformSettings, predictor: PredictorSettings, objects: ObjectStore,
                          model: PredictorModel, started: list, stop: asyncio.Event) -> None:
    """Load the arms, then serve them: the model turns ready, the admin API and Prometheus figures start."""
    try:
        loader = ArmLoader(CheckpointStore(objects), trace=predictor.trace_models)
        engine = await load_engine(predictor, loader, DatasetStore(objects), stop)
    except PlatformError:
        stop.set()  # e.g. a checkpoint that cannot serve: the process exits 1 naming it
        raise
    if engine is None:
        return
    await asyncio.to_thread(wire.warm_up)  # the request reader's loops, compiled or loaded before the model is ready
    REGISTRY.register(FiguresCollector(predictor.model_name, lambda: engine.latest_figures,
                                       lambda: engine.split.student_weight))
    metrics_port = start_metrics_server(settings.metrics_host, settings.metrics_port)
    started.append(await start_admin_server(engine, settings.grpc_host, settings.grpc_port))
    engine.start_background()
    model.attach(engine)
    log.info("predictor serving", extra={
        "model": predictor.model_name, "teacher": engine.pair.teacher.ref, "student": engine.pair.student.ref,
        "http_port": predictor.http_port, "inference_grpc_port": predictor.inference_grpc_port,
        "admin_port": settings.grpc_port, "metrics_port": metrics_port})


def main(settings: PlatformSettings | None = None) -> None:
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)
    try:
        predictor = PredictorSettings()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = "CROSSADAPT_PREDICTOR_" + "_".join(str(p) for p in first["loc"]).upper()
        raise SystemExit(f"predictor settings: {name}: {first['msg']}") from None
    try:
        asyncio.run(serve(settings, predictor))
    except PlatformError as exc:  # e.g. a checkpoint that does not exist or cannot serve: say so, exit 1
        log.error("predictor could not start: %s", exc, extra={"error": exc.to_dict()})
        raise SystemExit(f"predictor could not start: {exc}") from None


if __name__ == "__main__":
    main()
