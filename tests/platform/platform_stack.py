"""Test helpers around services.local.stack: stores of a stack, and driving operations over gRPC."""

from __future__ import annotations

from pathlib import Path

from services.local.stack import (  # noqa: F401 - re-exported for the tests
    S3_ACCESS_KEY,
    S3_BUCKET,
    S3_SECRET_KEY,
    LocalPlatform,
    RedisServer,
    SeaweedS3,
    free_port,
    stop_process,
    wait_for,
)

Stack = LocalPlatform

# 16k-row chunks with a short pause (injected by worker_hooks/sitecustomize.py, not a production
# setting): a shard task lasts long enough to be killed mid-way.
SLOW_CHUNKS = {"shard_chunk_rows": "16384"}
WORKER_HOOKS = Path(__file__).parent / "worker_hooks"
SLOW_ENV = {"PYTHONPATH": str(WORKER_HOOKS), "CROSSADAPT_TEST_CHUNK_PAUSE_S": "0.04"}


def s3_store(seaweed: SeaweedS3, prefix: str, **options):  # noqa: ANN003, ANN201
    from services.common.storage.s3 import S3ObjectStore

    return S3ObjectStore.connect(f"s3://{S3_BUCKET}/{prefix}", endpoint=seaweed.endpoint, access_key=S3_ACCESS_KEY,
                                 secret_key=S3_SECRET_KEY, **options)


def checkpoint_store(stack: Stack):  # noqa: ANN201
    from services.common.storage import CheckpointStore, open_object_store

    return CheckpointStore(open_object_store(stack.settings()))


# ---- driving operations through the gRPC API -------------------------------------------------
def start_projection(stack: Stack, teacher: str, student: str, width: int, seed: int = 7, **fields):  # noqa: ANN003, ANN201
    from services.common.proto import common_pb2, operations_pb2, projector_pb2

    request = projector_pb2.StartProjectionRequest(
        teacher=common_pb2.CheckpointRef(name=teacher), student_name=student, width=width, seed=seed, **fields
    )
    return stack.stub().StartProjection(request, timeout=30).operation


def get_operation(stack: Stack, operation_id: str):  # noqa: ANN201
    from services.common.proto import operations_pb2

    return stack.operations().GetOperation(operations_pb2.GetOperationRequest(operation_id=operation_id), timeout=10).operation


def watch_operation(stack: Stack, operation_id: str, timeout: float = 120.0) -> list:
    """Every update WatchOperation streams, until the operation is terminal."""
    from services.common.proto import operations_pb2

    stream = stack.operations().WatchOperation(operations_pb2.WatchOperationRequest(operation_id=operation_id), timeout=timeout)
    return [reply.operation for reply in stream]


def wait_terminal(stack: Stack, operation_id: str, timeout: float = 120.0):  # noqa: ANN201
    from services.common.proto import common_pb2

    terminal = {common_pb2.OPERATION_STATE_SUCCEEDED, common_pb2.OPERATION_STATE_FAILED,
                common_pb2.OPERATION_STATE_CANCELLED}
    return wait_for(lambda: (op := get_operation(stack, operation_id)).state in terminal and op, timeout,
                    f"operation {operation_id}", interval=0.2)
