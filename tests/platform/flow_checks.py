"""Checks shared by the Redis+S3 and the embedded stack: the same API must behave the same on both."""

from __future__ import annotations

import os
import signal
import time

import grpc
import numpy as np
import pytest

from crossadapt.transfer import project_table
from platform_stack import Stack, checkpoint_store, get_operation, start_projection, wait_for, wait_terminal, watch_operation
from services.common.celery_app import create_celery_app
from services.common.proto import common_pb2, operations_pb2, projector_pb2
from services.common.storage.tables import read_table
from services.projector.tasks import task_id

SUCCEEDED = common_pb2.OPERATION_STATE_SUCCEEDED
FAILED = common_pb2.OPERATION_STATE_FAILED


def check_projection_matches(stack: Stack, teacher: str, table: np.ndarray, width: int, student: str) -> None:
    """Project through gRPC; the published student table equals the in-process projection to 1e-5."""
    store = checkpoint_store(stack)
    before = store.versions(student)
    operation = start_projection(stack, teacher, student, width, seed=11)
    assert operation.state in (common_pb2.OPERATION_STATE_PENDING, common_pb2.OPERATION_STATE_RUNNING)
    updates = watch_operation(stack, operation.id)
    final = updates[-1]
    assert final.state == SUCCEEDED, final.error
    progress = [u.progress for u in updates]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert final.checkpoint.name == student and final.checkpoint.version not in before
    published = store.resolve(student, final.checkpoint.version)
    assert published.manifest.parent == store.resolve(teacher).ref
    assert published.manifest.extra["operation_id"] == operation.id
    layout = published.manifest.extra["tables"]["user"]
    assert layout["dim"] == width and len(layout["shards"]) == 8
    student_table = read_table(store, published, "user")  # every shard sha256-verified
    expected, report = project_table(table, width, seed=11)
    assert published.manifest.extra["projection"]["user"]["kind"] == report.kind
    np.testing.assert_allclose(student_table, expected, rtol=0, atol=1e-5)


def check_bad_inputs(stack: Stack, teacher: str) -> None:
    """Each bad request gets its code, the offending field named (details and trailer)."""
    cases = [
        ({"teacher": "no-such-teacher", "width": 8}, grpc.StatusCode.NOT_FOUND, "teacher"),
        ({"width": 0}, grpc.StatusCode.INVALID_ARGUMENT, "width"),
        ({"width": -3}, grpc.StatusCode.INVALID_ARGUMENT, "width"),
        ({"width": 8, "fields": ["user", "no_such_field"]}, grpc.StatusCode.INVALID_ARGUMENT, "fields[1]"),
        ({"width": 8, "vocab_sizes": {"user": 999}}, grpc.StatusCode.INVALID_ARGUMENT, "vocab_sizes[user]"),
        ({"width": 8, "vocab_hash": "f" * 64}, grpc.StatusCode.INVALID_ARGUMENT, "vocab_hash"),
        ({"width": 8, "student": "bad name!"}, grpc.StatusCode.INVALID_ARGUMENT, "student_name"),
    ]
    for case, code, field in cases:
        args = {"teacher": teacher, "student": "bad-input-student", **case}
        with pytest.raises(grpc.RpcError) as caught:
            start_projection(stack, args.pop("teacher"), args.pop("student"), args.pop("width"), **args)
        error = caught.value
        assert error.code() == code, (case, error.details())
        assert error.details().startswith(f"{field}: "), error.details()
        assert ("crossadapt-field", field) in tuple(error.trailing_metadata()), case
    request = projector_pb2.StartProjectionRequest(
        teacher=common_pb2.CheckpointRef(name=teacher, version="v999999"), student_name="s", width=8)
    with pytest.raises(grpc.RpcError) as caught:
        stack.stub().StartProjection(request, timeout=10)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    for call, message in [
        (stack.operations().GetOperation, operations_pb2.GetOperationRequest(operation_id="0" * 32)),
        (stack.operations().CancelOperation, operations_pb2.CancelOperationRequest(operation_id="0" * 32)),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            call(message, timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as caught:
        list(stack.operations().WatchOperation(operations_pb2.WatchOperationRequest(operation_id="../etc"), timeout=10))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert checkpoint_store(stack).versions("bad-input-student") == []


def _running_shard_task(stack: Stack, operation_id: str, units: list[str], below: float = 0.6) -> dict:
    """The PROGRESS meta {pid, unit, fraction, ...} of a shard task caught mid-way."""
    app = create_celery_app(stack.settings())

    def running() -> dict | None:
        for unit in units:
            result = app.AsyncResult(task_id(operation_id, unit))
            info = result.info if result.state == "PROGRESS" else None
            if info and info["fraction"] < below:
                return info
        return None

    return wait_for(running, 60, "a shard task in progress", interval=0.02)


def kill_mid_task(stack: Stack, teacher: str, table: np.ndarray, student: str, whole_worker: bool) -> dict:
    """SIGKILL the process running a shard task (or its whole worker); the operation must end
    SUCCEEDED with the right table, or FAILED with a reason, and no partial checkpoint is ever visible."""
    store = checkpoint_store(stack)
    operation = start_projection(stack, teacher, student, 32, seed=5)
    victim = _running_shard_task(stack, operation.id, [f"apply:user:{i:05d}" for i in range(8)])
    if whole_worker:
        parent = int(open(f"/proc/{victim['pid']}/stat").read().split(")")[1].split()[1])  # pool child → worker
        os.kill(parent, signal.SIGKILL)
    os.kill(victim["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120
    while (current := get_operation(stack, operation.id)).state not in (SUCCEEDED, FAILED):
        if store.versions(student):  # only the publish step makes it visible, and only whole (manifest last)
            assert get_operation(stack, operation.id).stage in ("publish", "done"), \
                "a checkpoint became visible before the operation was publishing"
        assert time.monotonic() < deadline, "operation neither finished nor failed after the kill"
        time.sleep(0.2)
    final = wait_terminal(stack, operation.id)
    if final.state == FAILED:
        assert final.error.message, "a failed operation must say why"
        assert store.versions(student) == []
    else:
        published = store.resolve(student)
        expected, _ = project_table(table, 32, seed=5)
        np.testing.assert_allclose(read_table(store, published, "user"), expected, rtol=0, atol=1e-5)
    return victim
