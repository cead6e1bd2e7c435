"""`python -m services.common.healthcheck [grpc-service]`: the images' HEALTHCHECK, for servers and workers.

One image runs both roles, so the check looks at what the container runs (PID 1's command line):

* `crossadapt worker …`: exit 0 if this worker's Celery node answers a ping over the broker (its
  node name from `--hostname`, `%h` expanded, default `celery@<hostname>`);
* anything else (`crossadapt serve …`): exit 0 if the local gRPC server says SERVING.

Kubernetes uses its native gRPC probe for servers and `crossadapt worker-health` for workers.
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

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


def worker_node(argv: list[str], hostname: str | None = None) -> str | None:
    """The Celery node name of a `crossadapt worker` command line, or None if it is not a worker."""
    if "worker" not in argv:
        return None
    hostname = hostname or socket.gethostname()
    node = f"celery@{hostname}"
    for index, arg in enumerate(argv):
        if arg in ("--hostname", "-n") and index + 1 < len(argv):
            node = argv[index + 1]
        elif arg.startswith("--hostname="):
            node = arg.split("=", 1)[1]
    return node.replace("%h", hostname).replace("%n", hostname.split(".")[0])


def check_worker(node: str, timeout_s: float = 5.0) -> bool:
    from services.common.celery_app import get_celery_app

    replies = get_celery_app().control.ping(destination=[node], timeout=timeout_s) or []
    return any(node in reply for reply in replies)


def _container_command() -> list[str]:
    try:
        return [part for part in Path("/proc/1/cmdline").read_bytes().decode().split("\0") if part]
    except OSError:
        return []


def main(argv: list[str]) -> int:
    node = worker_node(_container_command())
    if node is not None:
        return 0 if check_worker(node) else 1
    return 0 if check(argv[0] if argv else "") else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
