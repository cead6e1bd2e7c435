"""The projector's registration (`crossadapt.services` entry point): strings only, cheap to import."""

from services.common.registry import ServiceSpec

SPEC = ServiceSpec(
    name="projector",
    serve="services.projector.server:main",
    default_port=50051,
    grpc_service="crossadapt.v1.ProjectorService",
    stub="services.common.proto.projector_pb2_grpc:ProjectorServiceStub",
    queue="projector",
    task_modules=("services.projector.tasks",),
    description="Projects a teacher's embedding tables to the student's width (Celery map-reduce over row shards).",
)
