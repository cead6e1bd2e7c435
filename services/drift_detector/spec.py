"""The drift-detector's registration (`crossadapt.services` entry point): strings only, cheap to import."""

from services.common.registry import ServiceSpec

SPEC = ServiceSpec(
    name="drift-detector",
    serve="services.drift_detector.server:main",
    default_port=50055,
    grpc_service="crossadapt.v1.DriftDetectorService",
    stub="services.common.proto.drift_detector_pb2_grpc:DriftDetectorServiceStub",
    queue="drift-detector",
    task_modules=("services.drift_detector.tasks",),
    description="Feature drift between time windows and the replay ratio (Celery fan-out over windows; live states).",
)
