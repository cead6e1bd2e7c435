"""`python -m services.common.healthcheck [service]`: exit 0 if the local gRPC server says SERVING.

Used by the images' HEALTHCHECK (Kubernetes uses its native gRPC probe on the same health service).
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.settings import get_settings


def check(service: str = "", timeout_s: float = 3.0) -> bool:
    settings = get_settings()
    host = "127.0.0.1" if settings.grpc_host in ("0.0.0.0", "::", "[::]") else settings.grpc_host
    with grpc.insecure_channel(f"{host}:{settings.grpc_port}") as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


if __name__ == "__main__":
    sys.exit(0 if check(sys.argv[1] if len(sys.argv) > 1 else "") else 1)
