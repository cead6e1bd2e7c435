"""The projector end to end on Redis + SeaweedFS S3 with two real worker processes and a real gRPC server."""

from __future__ import annotations

import json
import signal
import time
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from flow_checks import check_bad_inputs, check_projection_matches, kill_mid_task
from platform_stack import (
    Stack,
    checkpoint_store,
    get_operation,
    start_projection,
    stop_process,
    wait_for,
    wait_terminal,
    watch_operation,
)
from services.common.operations import RedisOperationStore
from services.common.proto import common_pb2, operations_pb2, projector_pb2
from services.common.storage.tables import upload_table_checkpoint

pytestmark = pytest.mark.slow
TEACHER = "ctr/teacher"


@pytest.fixture(scope="module")
def stack(redis_s3_stack: Stack, teacher_table: np.ndarray) -> Stack:
    upload_table_checkpoint(checkpoint_store(redis_s3_stack), TEACHER, {"user": teacher_table}, num_shards=8,
                            vocab_hash="a" * 64)
    return redis_s3_stack


@pytest.mark.parametrize("width", [32, 8])
def test_projection_through_grpc_matches_in_process(stack: Stack, teacher_table: np.ndarray, width: int) -> None:
    check_projection_matches(stack, TEACHER, teacher_table, width, student=f"ctr/student-{width}")


def test_bad_input_gets_its_status_code(stack: Stack) -> None:
    check_bad_inputs(stack, TEACHER)


def test_corrupt_shard_fails_with_data_loss_and_publishes_nothing(stack: Stack, teacher_table: np.ndarray) -> None:
    store = checkpoint_store(stack)
    teacher = upload_table_checkpoint(store, "ctr/corrupt", {"user": teacher_table[:40_000]}, num_shards=4)
    shard = teacher.manifest.extra["tables"]["user"]["shards"][2]["file"]
    key = f"checkpoints/{teacher.name}/{teacher.version}/{shard}"
    data = bytearray(store.objects.get_bytes(key))
    data[-5] ^= 0xFF  # same size, one flipped byte in the tensor payload
    store.objects.put_bytes(key, bytes(data))
    operation = start_projection(stack, "ctr/corrupt", "ctr/corrupt-student", 32)  # other shards get written
    final = watch_operation(stack, operation.id)[-1]
    assert final.state == common_pb2.OPERATION_STATE_FAILED
    assert final.error.code == grpc.StatusCode.DATA_LOSS.value[0] and final.error.code_name == "DATA_LOSS"
    assert final.error.field == shard and "sha256" in final.error.message
    assert store.versions("ctr/corrupt-student") == []
    # The operation turns FAILED before its outputs are discarded, and a shard still being written when it
    # failed removes its own file once it sees the terminal state (tasks.apply_shard_task): the discard is
    # eventual, so wait for it rather than read the bucket at the instant the failure became visible.
    deadline = time.monotonic() + 30
    while True:
        claimed = store.objects.list_keys("checkpoints/ctr/corrupt-student")
        if claimed and all("/.claims/" in key for key in claimed):
            break  # data files were discarded; the claim keeps the version number from being reused
        assert time.monotonic() < deadline, f"data files left behind: {claimed}"
        time.sleep(0.2)
    assert store.versions("ctr/corrupt-student") == []  # and nothing was published meanwhile


def test_killed_pool_process_task_is_redelivered(stack: Stack, teacher_table: np.ndarray) -> None:
    victim = kill_mid_task(stack, TEACHER, teacher_table, "ctr/killed-child", whole_worker=False)
    final = get_operation(stack, victim["operation_id"])
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED  # the prefork parent requeued it at once
    attempts = RedisOperationStore(stack.settings().result_backend).redis.hget(
        f"crossadapt:op:{victim['operation_id']}:attempts", victim["unit"])
    assert int(attempts) >= 2


def test_killed_worker_task_is_redelivered_to_the_other_worker(stack: Stack, teacher_table: np.ndarray) -> None:
    victim = kill_mid_task(stack, TEACHER, teacher_table, "ctr/killed-worker", whole_worker=True)
    assert get_operation(stack, victim["operation_id"]).state == common_pb2.OPERATION_STATE_SUCCEEDED
    dead = [name for name, proc in stack.workers.items() if proc.poll() is not None]
    assert len(dead) == 1
    stack.start_worker(dead[0])  # two workers again for the tests that follow


def test_cancel_stops_the_operation_and_publishes_nothing(stack: Stack) -> None:
    operation = start_projection(stack, TEACHER, "ctr/cancelled", 8)
    wait_for(lambda: get_operation(stack, operation.id).state == common_pb2.OPERATION_STATE_RUNNING, 30, "running")
    cancelled = stack.operations().CancelOperation(operations_pb2.CancelOperationRequest(operation_id=operation.id)).operation
    assert cancelled.state == common_pb2.OPERATION_STATE_CANCELLED
    assert cancelled.error.code_name == "CANCELLED"
    with pytest.raises(grpc.RpcError) as caught:
        stack.operations().CancelOperation(operations_pb2.CancelOperationRequest(operation_id=operation.id))
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert wait_terminal(stack, operation.id).state == common_pb2.OPERATION_STATE_CANCELLED
    assert checkpoint_store(stack).versions("ctr/cancelled") == []


def test_operation_state_survives_a_server_restart(stack: Stack) -> None:
    operation = start_projection(stack, TEACHER, "ctr/restart", 8, request_id="restart-1")
    stream = stack.operations().WatchOperation(operations_pb2.WatchOperationRequest(operation_id=operation.id), timeout=60)
    next(stream)
    assert stop_process(stack.server, signal.SIGTERM) == 0  # graceful: drains and exits 0
    with pytest.raises(grpc.RpcError) as caught:
        list(stream)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    stack.start_server()
    final = wait_terminal(stack, operation.id)
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED
    assert final.checkpoint.name == "ctr/restart"
    again = start_projection(stack, TEACHER, "ctr/restart", 8, request_id="restart-1")  # idempotent
    assert again.id == operation.id and again.state == common_pb2.OPERATION_STATE_SUCCEEDED
    with pytest.raises(grpc.RpcError) as caught:
        start_projection(stack, TEACHER, "ctr/restart", 16, request_id="restart-1")
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_health_reflection_metrics_and_json_logs(stack: Stack) -> None:
    channel = stack.channel()
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(service="")).status == health_pb2.HealthCheckResponse.SERVING
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    services = {s.name for reply in replies for s in reply.list_services_response.service}
    assert {"crossadapt.v1.ProjectorService", "crossadapt.v1.OperationsService", "grpc.health.v1.Health"} <= services
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_ports['projector']}/metrics", timeout=10) as response:
        metrics = response.read().decode()
    assert 'crossadapt_grpc_requests_total{code="OK",method="GetOperation",service="crossadapt.v1.OperationsService"}' in metrics
    assert 'code="INVALID_ARGUMENT",method="StartProjection"' in metrics
    assert "crossadapt_grpc_request_duration_seconds_bucket" in metrics
    succeeded = [line for line in metrics.splitlines()
                 if line.startswith('crossadapt_operations{kind="projection",state="SUCCEEDED"}')]
    assert succeeded and float(succeeded[0].split()[-1]) >= 1
    records = [json.loads(line) for line in stack.log("server-projector").read_text().splitlines() if line.startswith("{")]
    rpc = [r for r in records if r["msg"] == "rpc"]
    assert rpc and {"service", "method", "code", "seconds", "ts", "level"} <= set(rpc[-1])
