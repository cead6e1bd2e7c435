"""A dependency that goes away mid-operation: S3 unreachable for a few seconds.

A projection is running on the Redis + SeaweedFS stack when SeaweedFS is killed outright and started
again on the same ports and data. The operation must end (SUCCEEDED with the right table, or FAILED saying why), and no
reader may ever see a half-published checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from crossadapt.transfer import project_table
from platform_stack import (
    SLOW_CHUNKS,
    SLOW_ENV,
    RedisServer,
    SeaweedS3,
    Stack,
    checkpoint_store,
    get_operation,
    start_projection,
    wait_terminal,
)
from services.common.proto import common_pb2
from services.common.storage.tables import read_table, upload_table_checkpoint

ROWS = 400_000
# A chain lost in a Redis restart is re-sent after this much silence (tasks report every chunk, < 1 s).
STALL_S = "5"
TERMINAL = {common_pb2.OPERATION_STATE_SUCCEEDED, common_pb2.OPERATION_STATE_FAILED}


@pytest.fixture(scope="module")
def outage_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, RedisServer, SeaweedS3]]:
    """Its own Redis (append-only file) and its own SeaweedFS, so killing them disturbs no other test."""
    redis = RedisServer.start(tmp_path_factory.mktemp("outage-redis"), persistent=True)
    s3 = SeaweedS3.start(tmp_path_factory.mktemp("outage-s3"))
    stack = Stack.redis_s3(tmp_path_factory.mktemp("outage-stack"), redis, s3, visibility_timeout_s="10",
                           stall_s=STALL_S, **SLOW_CHUNKS)
    stack.extra_env.update(SLOW_ENV)
    try:
        stack.start(workers=("o1",), server=True, queue_names=("projector",))
        yield stack, redis, s3
    finally:
        stack.stop()
        s3.stop()
        redis.stop()


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((ROWS, 16)) * np.geomspace(2.0, 0.1, 16)).astype(np.float32)


def _projection_survives(stack: Stack, table: np.ndarray, student: str, outage,  # noqa: ANN001
                         teacher: str = "outage/teacher") -> common_pb2.Operation:
    store = checkpoint_store(stack)
    operation = start_projection(stack, teacher, student, 32, seed=3)
    while get_operation(stack, operation.id).state == common_pb2.OPERATION_STATE_PENDING:
        time.sleep(0.05)
    assert get_operation(stack, operation.id).state == common_pb2.OPERATION_STATE_RUNNING  # the outage hits mid-way
    outage()
    deadline = time.monotonic() + 180
    while (current := get_operation(stack, operation.id)).state not in TERMINAL:
        if store.versions(student):  # visible only whole, once publishing
            assert current.stage in ("publish", "done"), current
        assert time.monotonic() < deadline, f"the operation neither finished nor failed: {current}"
        time.sleep(0.3)
    final = wait_terminal(stack, operation.id)
    if final.state == common_pb2.OPERATION_STATE_FAILED:
        assert final.error.message, "a failed operation must say why"
        assert store.versions(student) == []
    else:
        expected, _ = project_table(table, 32, seed=3)
        np.testing.assert_allclose(read_table(store, store.resolve(student), "user"), expected, rtol=0, atol=1e-5)
    return final


def test_s3_unreachable_for_a_few_seconds(outage_stack, table: np.ndarray) -> None:  # noqa: ANN001
    stack, _, s3 = outage_stack
    upload_table_checkpoint(checkpoint_store(stack), "outage/teacher", {"user": table}, num_shards=4)
    final = _projection_survives(stack, table, "outage/after-s3", lambda: s3.restart(down_s=3.0))
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error  # transient errors were retried


def test_redis_restarted_mid_projection(outage_stack, table: np.ndarray) -> None:  # noqa: ANN001
    stack, redis, _ = outage_stack
    upload_table_checkpoint(checkpoint_store(stack), "outage/teacher-r", {"user": table}, num_shards=4)
    final = _projection_survives(stack, table, "outage/after-redis", lambda: redis.restart(down_s=1.0),
                                 teacher="outage/teacher-r")
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
