"""The online co-distiller's registration (`crossadapt.services` entry point): strings only, cheap to import."""

from services.common.registry import ServiceSpec

SPEC = ServiceSpec(
    name="online-codistiller",
    serve="services.online_codistiller.server:main",
    default_port=50054,
    grpc_service="crossadapt.v1.OnlineCoDistillerService",
    stub="services.common.proto.online_codistiller_pb2_grpc:OnlineCoDistillerServiceStub",
    queue="online-codistiller",
    task_modules=("services.online_codistiller.tasks",),
    description="Asymmetric co-distillation over a stream's partitions (long-running; resumes at its position).",
)
