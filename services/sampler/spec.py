"""The sampler's registration (`crossadapt.services` entry point): strings only, cheap to import."""

from services.common.registry import ServiceSpec

SPEC = ServiceSpec(
    name="sampler",
    serve="services.sampler.server:main",
    default_port=50052,
    grpc_service="crossadapt.v1.SamplerService",
    stub="services.common.proto.sampler_pb2_grpc:SamplerServiceStub",
    queue="sampler",
    task_modules=("services.sampler.tasks",),
    description="Draws the strategic distillation sample and caches the teacher's logits (Celery group over blocks).",
)
