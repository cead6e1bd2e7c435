"""The predictor's registration (`crossadapt.services` entry point): strings only, cheap to import."""

from services.common.registry import ServiceSpec

SPEC = ServiceSpec(
    name="predictor",
    serve="services.predictor.server:main",
    default_port=50056,
    grpc_service="crossadapt.v1.PredictorAdminService",
    stub="services.common.proto.predictor_pb2_grpc:PredictorAdminServiceStub",
    queue=None,
    description="KServe model server for a teacher and a student: sticky A/B split, shadow scores, "
    "per-arm metrics with paired bootstrap deltas, hot swap (admin gRPC; inference on KServe V1/V2).",
    extra_ports={"http": 8080, "grpc": 8081},
)
