"""The same projector flow on the embedded defaults: filesystem:// broker, file results, local store — no servers."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from flow_checks import check_bad_inputs, check_projection_matches, kill_mid_task
from platform_stack import Stack, checkpoint_store, get_operation, start_projection, watch_operation
from services.common.celery_app import create_celery_app
from services.common.proto import common_pb2
from services.common.storage.tables import upload_table_checkpoint

pytestmark = pytest.mark.slow
TEACHER = "teacher"


@pytest.fixture(scope="module")
def stack(embedded_stack: Stack, teacher_table: np.ndarray) -> Stack:
    assert embedded_stack.settings().embedded_broker and not embedded_stack.settings().uses_s3
    upload_table_checkpoint(checkpoint_store(embedded_stack), TEACHER, {"user": teacher_table}, num_shards=8)
    return embedded_stack


@pytest.mark.parametrize("width", [32, 8])
def test_projection_through_grpc_matches_in_process(stack: Stack, teacher_table: np.ndarray, width: int) -> None:
    check_projection_matches(stack, TEACHER, teacher_table, width, student=f"student-{width}")


def test_bad_input_gets_its_status_code(stack: Stack) -> None:
    check_bad_inputs(stack, TEACHER)


def test_remote_control_works_over_the_filesystem_broker(stack: Stack) -> None:
    app = create_celery_app(stack.settings())
    replies = app.control.ping(timeout=5.0, limit=2)
    names = {name.split("@")[0] for reply in replies for name in reply}
    assert names == {"e1", "e2"}, replies
    stats = app.control.inspect(timeout=5.0, limit=2).active_queues() or {}
    assert all(q[0]["name"] == "projector" for q in stats.values()) and len(stats) == 2


def test_killed_pool_process_task_is_redelivered(stack: Stack, teacher_table: np.ndarray) -> None:
    victim = kill_mid_task(stack, TEACHER, teacher_table, "killed-child", whole_worker=False)
    assert get_operation(stack, victim["operation_id"]).state == common_pb2.OPERATION_STATE_SUCCEEDED


def test_corrupt_shard_fails_pca_with_data_loss(stack: Stack, teacher_table: np.ndarray) -> None:
    store = checkpoint_store(stack)
    teacher = upload_table_checkpoint(store, "corrupt", {"user": teacher_table[:20_000]}, num_shards=4)
    shard = teacher.manifest.extra["tables"]["user"]["shards"][1]["file"]
    key = f"checkpoints/corrupt/{teacher.version}/{shard}"
    data = bytearray(store.objects.get_bytes(key))
    data[200] ^= 0x01
    store.objects.put_bytes(key, bytes(data))
    final = watch_operation(stack, start_projection(stack, "corrupt", "corrupt-student", 4).id)[-1]
    assert final.state == common_pb2.OPERATION_STATE_FAILED
    assert final.error.code == grpc.StatusCode.DATA_LOSS.value[0] and final.error.field == shard
    assert store.versions("corrupt-student") == []
