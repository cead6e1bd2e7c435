"""The offline-distiller's registration (`crossadapt.services` entry point): strings only, cheap to import."""

from services.common.registry import ServiceSpec

SPEC = ServiceSpec(
    name="offline-distiller",
    serve="services.offline_distiller.server:main",
    default_port=50053,
    grpc_service="crossadapt.v1.OfflineDistillerService",
    stub="services.common.proto.offline_distiller_pb2_grpc:OfflineDistillerServiceStub",
    queue="offline-distiller",
    task_modules=("services.offline_distiller.tasks",),
    description="Progressive distillation of a projected student (one resumable Celery task; DDP across processes).",
)
