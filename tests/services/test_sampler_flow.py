"""The sampler end to end: real Redis, SeaweedFS S3, gRPC server and Celery worker (kill -9 included)."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.request

import grpc
import pytest

from crossadapt.transfer.offline.distillation import cache_teacher_logits
from crossadapt.transfer.offline.sampling import SamplingConfig, StrategicSampler
from sampler_drift_fixtures import (  # noqa: F401 - platform is a fixture
    QUEUES,
    Platform,
    assert_same_rows,
    platform,
    put_dataset,
    put_teacher,
    tiny_clicks,
    tiny_model,
    unique,
)
from services.common.celery_app import create_celery_app
from services.common.model_io import read_all
from services.common.operations import RedisOperationStore
from services.common.proto import common_pb2, operations_pb2, sampler_pb2
from services.common.storage import DatasetStore
from services.local.stack import wait_for
from services.sampler.pipeline import block_unit
from services.sampler.tasks import task_id

pytestmark = pytest.mark.slow
SUCCEEDED, FAILED = common_pb2.OPERATION_STATE_SUCCEEDED, common_pb2.OPERATION_STATE_FAILED
CANCELLED = common_pb2.OPERATION_STATE_CANCELLED
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)
ROWS = 3_000


@pytest.fixture(scope="module")
def source(platform: Platform) -> dict[str, str]:  # noqa: F811
    objects = platform.objects()
    names = {"dataset": unique("clicks"), "teacher": unique("teacher")}
    put_dataset(objects, names["dataset"], tiny_clicks(ROWS, seed=1), partitions=3)
    put_teacher(objects, names["teacher"], tiny_model(seed=2))
    return names


def start(platform: Platform, source: dict[str, str], sample: str, request_id: str = "", **config):  # noqa: ANN003, ANN201, F811
    request = sampler_pb2.StartSamplingRequest(
        dataset=common_pb2.DatasetRef(name=config.pop("dataset", source["dataset"])),
        teacher=common_pb2.CheckpointRef(name=config.pop("teacher", source["teacher"])),
        config=sampler_pb2.SamplingConfig(**config), sample_name=sample, request_id=request_id)
    return platform.stack.stub("sampler").StartSampling(request, timeout=30).operation


def operations(platform: Platform):  # noqa: ANN201, F811
    return platform.stack.operations("sampler")


def watch(platform: Platform, operation_id: str) -> list:  # noqa: F811
    stream = operations(platform).WatchOperation(operations_pb2.WatchOperationRequest(operation_id=operation_id),
                                                 timeout=120)
    return [reply.operation for reply in stream]


def get(platform: Platform, operation_id: str):  # noqa: ANN201, F811
    return operations(platform).GetOperation(operations_pb2.GetOperationRequest(operation_id=operation_id),
                                             timeout=10).operation


def expected_sample(config: SamplingConfig):  # noqa: ANN201
    data = tiny_clicks(ROWS, seed=1)
    rows = data.take(StrategicSampler(config).sample(data.label, data.timestamp).indices)
    return rows.with_teacher_logit(cache_teacher_logits(tiny_model(seed=2), rows, 8192))


def test_sampling_through_grpc_equals_the_in_process_sample(platform: Platform, source: dict[str, str]) -> None:  # noqa: F811
    sample = unique("sample")
    operation = start(platform, source, sample, request_id=sample, ratio=0.2, temporal_blocks=4, seed=7)
    assert operation.kind == "sampling" and operation.state in (common_pb2.OPERATION_STATE_PENDING,
                                                                common_pb2.OPERATION_STATE_RUNNING)
    updates = watch(platform, operation.id)
    final = updates[-1]
    assert final.state == SUCCEEDED, final.error
    progress = [u.progress for u in updates]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert final.dataset.name == sample and final.stage == "done"
    expected = expected_sample(SamplingConfig(ratio=0.2, temporal_blocks=4, seed=7))
    assert_same_rows(read_all(DatasetStore(platform.objects()), sample), expected)
    details = dict(final.details)
    assert [int(n) for n in details["rows_per_block"]] == [len(expected) // 4] * 4
    assert details["teacher"]["pcoc"] > 0 and details["positive_rate"] == pytest.approx(0.5, abs=0.01)
    assert platform.objects().list_keys(f"operations/{operation.id}") == []  # scratch removed
    again = start(platform, source, sample, request_id=sample, ratio=0.2, temporal_blocks=4, seed=7)
    assert again.id == operation.id and again.state == SUCCEEDED  # the idempotency key
    with pytest.raises(grpc.RpcError) as caught:
        start(platform, source, sample, request_id=sample, ratio=0.3, temporal_blocks=4, seed=7)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_input_is_refused_at_start_before_any_worker_runs(platform: Platform, source: dict[str, str]) -> None:  # noqa: F811
    objects = platform.objects()
    other_vocab = unique("teacher-other-vocab")
    put_teacher(objects, other_vocab, tiny_model(seed=2), vocab_hash="c" * 64)
    before = len(operations(platform).ListOperations(operations_pb2.ListOperationsRequest(kind="sampling")).operations)
    cases = [
        ({"dataset": "no-such-data"}, grpc.StatusCode.NOT_FOUND, "dataset"),
        ({"teacher": "no-such-teacher"}, grpc.StatusCode.NOT_FOUND, "teacher"),
        ({"teacher": other_vocab}, grpc.StatusCode.INVALID_ARGUMENT, "teacher"),
        ({"ratio": 1.5}, grpc.StatusCode.INVALID_ARGUMENT, "config.ratio"),
        ({"temporal_blocks": -1}, grpc.StatusCode.INVALID_ARGUMENT, "config.temporal_blocks"),
        ({"unclicked_ratio": 2.0}, grpc.StatusCode.INVALID_ARGUMENT, "config.unclicked_ratio"),
        ({"sample": source["dataset"]}, grpc.StatusCode.INVALID_ARGUMENT, "sample_name"),
    ]
    for case, code, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            start(platform, source, case.pop("sample", unique("never")), **case)
        assert caught.value.code() == code, (case, caught.value.details())
        assert caught.value.details().startswith(f"{field}: "), caught.value.details()
        assert ("crossadapt-field", field) in tuple(caught.value.trailing_metadata())
    after = len(operations(platform).ListOperations(operations_pb2.ListOperationsRequest(kind="sampling")).operations)
    assert after == before  # refused before any operation was recorded


def _running_block(platform: Platform, operation_id: str, blocks: int) -> dict:  # noqa: F811
    """The PROGRESS meta {pid, unit, fraction, ...} of a block task caught mid-way."""
    app = create_celery_app(platform.stack.settings())

    def running() -> dict | None:
        for block in range(blocks):
            result = app.AsyncResult(task_id(operation_id, block_unit(block)))
            info = result.info if result.state == "PROGRESS" else None
            if info and info["fraction"] < 0.7:
                return info
        return None

    return wait_for(running, 60, "a block task in progress", interval=0.02)


def test_kill_9_mid_block_redelivers_and_no_reader_sees_a_partial_sample(platform: Platform,  # noqa: F811
                                                                         source: dict[str, str]) -> None:
    sample = unique("killed")
    config = {"ratio": 0.4, "temporal_blocks": 3, "seed": 5}
    datasets = DatasetStore(platform.objects())
    expected = expected_sample(SamplingConfig(**config))
    seen: list[int] = []
    stop = threading.Event()

    def reader() -> None:  # a reader polling the sample name all along: nothing, or the whole sample
        while not stop.is_set():
            if datasets.partitions(sample):
                seen.append(len(read_all(datasets, sample)))
            time.sleep(0.05)

    watcher = threading.Thread(target=reader, daemon=True)
    platform.slow(True)
    try:
        operation = start(platform, source, sample, **config)
        watcher.start()
        victim = _running_block(platform, operation.id, 3)
        os.kill(victim["pid"], signal.SIGKILL)
        platform.slow(False)
        final = wait_for(lambda: (op := get(platform, operation.id)).state in TERMINAL and op, 120, "terminal")
    finally:
        platform.slow(False)
        stop.set()
        watcher.join(10)
    if final.state == FAILED:
        assert final.error.message, "a failed operation must say why"
        assert datasets.partitions(sample) == []
    else:
        assert final.state == SUCCEEDED
        assert_same_rows(read_all(datasets, sample), expected)
        attempts = RedisOperationStore(platform.stack.settings().result_backend).redis.hget(
            f"crossadapt:op:{operation.id}:attempts", victim["unit"])
        assert int(attempts) >= 2  # the killed block ran again
    assert all(n == len(expected) for n in seen), seen


def test_cancel_stops_the_sampling_and_discards_its_scratch(platform: Platform, source: dict[str, str]) -> None:  # noqa: F811
    sample = unique("cancelled")
    platform.slow(True)
    try:
        operation = start(platform, source, sample, ratio=0.4, temporal_blocks=3, seed=1)
        _running_block(platform, operation.id, 3)
        cancelled = operations(platform).CancelOperation(
            operations_pb2.CancelOperationRequest(operation_id=operation.id), timeout=10).operation
    finally:
        platform.slow(False)
    assert cancelled.state == CANCELLED and cancelled.error.code_name == "CANCELLED"
    with pytest.raises(grpc.RpcError) as caught:
        operations(platform).CancelOperation(operations_pb2.CancelOperationRequest(operation_id=operation.id),
                                             timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    objects = platform.objects()
    wait_for(lambda: objects.list_keys(f"operations/{operation.id}") == [], 30, "the scratch discarded")
    assert DatasetStore(objects).partitions(sample) == []


def test_a_corrupt_partition_fails_the_operation_naming_it(platform: Platform, source: dict[str, str]) -> None:  # noqa: F811
    objects = platform.objects()
    name = unique("corrupt")
    parts = put_dataset(objects, name, tiny_clicks(600, seed=3), partitions=3)
    key = f"datasets/{name}/{parts[2]}/data.parquet"
    objects.put_bytes(key, objects.get_bytes(key)[:-40])  # truncated footer: pyarrow cannot open it
    operation = start(platform, source, unique("from-corrupt"), dataset=name, ratio=0.2, temporal_blocks=2)
    final = watch(platform, operation.id)[-1]
    assert final.state == FAILED and final.error.code_name == "FAILED_PRECONDITION"
    assert f"{name}/{parts[2]}" in final.error.message and final.error.field == "dataset"


def test_health_reflection_and_metrics(platform: Platform) -> None:  # noqa: F811
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(platform.stack.channel("sampler"))
    reply = health.Check(health_pb2.HealthCheckRequest(service="crossadapt.v1.SamplerService"), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    port = platform.stack.metrics_ports["sampler"]

    def scrape() -> str | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        return text if 'crossadapt_operations{kind="sampling"' in text else None

    # The operations gauge is cached for a few seconds (services.common.metrics): wait for a fresh count.
    text = wait_for(scrape, 15, "the sampling operations gauge")
    assert 'method="StartSampling",service="crossadapt.v1.SamplerService"' in text


def test_killed_worker_task_comes_back_after_the_visibility_timeout(platform: Platform,  # noqa: F811
                                                                    source: dict[str, str]) -> None:
    """The whole worker (parent and pool children) killed: Redis redelivers the unacknowledged task to
    the worker started in its place, and the operation still ends with the in-process sample."""
    sample = unique("worker-killed")
    config = {"ratio": 0.4, "temporal_blocks": 3, "seed": 8}
    datasets = DatasetStore(platform.objects())
    worker = platform.stack.workers["w1"]
    platform.slow(True)
    try:
        operation = start(platform, source, sample, **config)
        victim = _running_block(platform, operation.id, 3)
        os.killpg(worker.pid, signal.SIGKILL)  # its own session: the parent and every pool child
        worker.wait(10)
        assert datasets.partitions(sample) == []
    finally:
        platform.slow(False)
        platform.stack.start(workers=("w1",), queue_names=QUEUES, concurrency=2)
    final = wait_for(lambda: (op := get(platform, operation.id)).state in TERMINAL and op, 120, "terminal")
    if final.state == FAILED:
        assert final.error.message and datasets.partitions(sample) == []
    else:
        assert final.state == SUCCEEDED
        assert_same_rows(read_all(datasets, sample), expected_sample(SamplingConfig(**config)))
        attempts = RedisOperationStore(platform.stack.settings().result_backend).redis.hget(
            f"crossadapt:op:{operation.id}:attempts", victim["unit"])
        assert int(attempts) >= 2
