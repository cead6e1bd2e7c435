"""The drift-detector end to end: real Redis, SeaweedFS S3, gRPC server and Celery worker (kill -9 included)."""

from __future__ import annotations

import os
import signal
import urllib.request
from datetime import datetime, timezone

import grpc
from google.protobuf.json_format import MessageToDict
import pytest

from crossadapt.data import SplitArrays
from crossadapt.models.spec import FeatureSpec
from sampler_drift_fixtures import TINY_SPEC, Platform, platform, put_dataset, tiny_clicks, unique  # noqa: F401
from services.common.celery_app import create_celery_app
from services.common.model_io import split_table
from services.common.operations import RedisOperationStore
from services.common.proto import common_pb2, drift_detector_pb2, operations_pb2
from services.common.storage import DatasetStore
from services.drift_detector.pipeline import window_unit
from services.drift_detector.tasks import task_id
from services.local.stack import wait_for
from test_drift_pipeline import REFERENCE, STREAM, _core_controller, _feed

pytestmark = pytest.mark.slow
SUCCEEDED, FAILED = common_pb2.OPERATION_STATE_SUCCEEDED, common_pb2.OPERATION_STATE_FAILED
CANCELLED = common_pb2.OPERATION_STATE_CANCELLED
TERMINAL = (SUCCEEDED, FAILED, CANCELLED)


@pytest.fixture(scope="module")
def data(platform: Platform) -> dict[str, str]:  # noqa: F811
    objects = platform.objects()
    names = {"reference": unique("reference"), "stream": unique("stream")}
    put_dataset(objects, names["reference"], REFERENCE, partitions=3)
    put_dataset(objects, names["stream"], STREAM, partitions=4)
    return names


def stub(platform: Platform):  # noqa: ANN201, F811
    return platform.stack.stub("drift-detector")


def operations(platform: Platform):  # noqa: ANN201, F811
    return platform.stack.operations("drift-detector")


def compute(platform: Platform, data: dict[str, str], request_id: str = "", **config):  # noqa: ANN003, ANN201, F811
    request = drift_detector_pb2.ComputeDriftRequest(
        reference=common_pb2.DatasetRef(name=config.pop("reference", data["reference"])),
        stream=common_pb2.DatasetRef(name=config.pop("stream", data["stream"])),
        config=drift_detector_pb2.DriftConfig(**config), request_id=request_id)
    return stub(platform).ComputeDrift(request, timeout=30).operation


def watch(platform: Platform, operation_id: str) -> list:  # noqa: F811
    stream = operations(platform).WatchOperation(operations_pb2.WatchOperationRequest(operation_id=operation_id),
                                                 timeout=120)
    return [reply.operation for reply in stream]


def get(platform: Platform, operation_id: str):  # noqa: ANN201, F811
    return operations(platform).GetOperation(operations_pb2.GetOperationRequest(operation_id=operation_id),
                                             timeout=10).operation


def check_core_numbers(details: dict, windows: int) -> None:
    controller = _core_controller({"windows": windows}, len(STREAM) // windows)
    assert details["reference"]["shift"] == pytest.approx(controller.initial_report.shift, rel=1e-12)
    _feed(controller, STREAM)
    history = {entry.windows: entry for entry in controller.history if entry.reason == "window"}
    per_window = details["stream"]["per_window"]
    assert len(per_window) == windows
    for entry in per_window[1:]:
        core = history[int(entry["window"]) + 1]
        assert entry["shift"] == pytest.approx(core.shift, rel=1e-12)
        assert entry["replay_ratio"] == pytest.approx(core.ratio, rel=1e-12)
    assert details["replay_ratio"] == pytest.approx(controller.ratio, rel=1e-12)


def test_compute_drift_through_grpc_gives_the_cores_numbers(platform: Platform, data: dict[str, str]) -> None:  # noqa: F811
    key = unique("drift")
    operation = compute(platform, data, request_id=key, windows=4)
    assert operation.kind == "drift"
    updates = watch(platform, operation.id)
    final = updates[-1]
    assert final.state == SUCCEEDED, final.error
    progress = [u.progress for u in updates]
    assert progress == sorted(progress) and progress[-1] == 1.0
    check_core_numbers(MessageToDict(final.details), 4)
    # The worker marks the operation succeeded, then drops its scratch (a redelivered reduce still finds it).
    wait_for(lambda: platform.objects().list_keys(f"operations/{operation.id}") == [], 30, "scratch dropped")
    assert platform.objects().list_keys(f"operations/{operation.id}") == []
    again = compute(platform, data, request_id=key, windows=4)
    assert again.id == operation.id and again.state == SUCCEEDED
    with pytest.raises(grpc.RpcError) as caught:
        compute(platform, data, request_id=key, windows=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_input_is_refused_at_start(platform: Platform, data: dict[str, str]) -> None:  # noqa: F811
    objects = platform.objects()
    narrow = unique("narrow")
    spec = FeatureSpec(categorical=TINY_SPEC.categorical, numerical=())
    DatasetStore(objects).write_partition(narrow, datetime(2026, 1, 1, tzinfo=timezone.utc), split_table(
        SplitArrays(categorical=STREAM.categorical, numerical=STREAM.numerical[:, :0], label=STREAM.label), spec))
    cases = [({"reference": "no-such-data"}, grpc.StatusCode.NOT_FOUND, "reference"),
             ({"stream": narrow}, grpc.StatusCode.INVALID_ARGUMENT, "stream"),
             ({"metric": "l2"}, grpc.StatusCode.INVALID_ARGUMENT, "config.metric"),
             ({"low": 0.3, "high": 0.2}, grpc.StatusCode.INVALID_ARGUMENT, "config.high")]
    for case, code, field in cases:
        with pytest.raises(grpc.RpcError) as caught:
            compute(platform, data, **case)
        assert caught.value.code() == code, (case, caught.value.details())
        assert ("crossadapt-field", field) in tuple(caught.value.trailing_metadata())


def _running_window(platform: Platform, operation_id: str, windows: int) -> dict:  # noqa: F811
    app = create_celery_app(platform.stack.settings())
    units = [window_unit(source, w) for source in ("reference", "stream") for w in range(windows)]

    def running() -> dict | None:
        for unit in units:
            result = app.AsyncResult(task_id(operation_id, unit))
            if result.state == "PROGRESS" and result.info:
                return result.info
        return None

    return wait_for(running, 60, "a window task in progress", interval=0.02)


def test_kill_9_mid_window_still_gives_the_cores_numbers(platform: Platform, data: dict[str, str]) -> None:  # noqa: F811
    platform.slow(True)
    try:
        operation = compute(platform, data, windows=4)
        victim = _running_window(platform, operation.id, 4)
        os.kill(victim["pid"], signal.SIGKILL)
        platform.slow(False)
        final = wait_for(lambda: (op := get(platform, operation.id)).state in TERMINAL and op, 120, "terminal")
    finally:
        platform.slow(False)
    if final.state == FAILED:
        assert final.error.message, "a failed operation must say why"
    else:
        assert final.state == SUCCEEDED
        check_core_numbers(MessageToDict(final.details), 4)
        attempts = RedisOperationStore(platform.stack.settings().result_backend).redis.hget(
            f"crossadapt:op:{operation.id}:attempts", victim["unit"])
        assert int(attempts) >= 2  # the killed window ran again


def test_cancel_stops_the_measurement_and_discards_its_scratch(platform: Platform, data: dict[str, str]) -> None:  # noqa: F811
    platform.slow(True)
    try:
        operation = compute(platform, data, windows=4)
        _running_window(platform, operation.id, 4)
        cancelled = operations(platform).CancelOperation(
            operations_pb2.CancelOperationRequest(operation_id=operation.id), timeout=10).operation
    finally:
        platform.slow(False)
    assert cancelled.state == CANCELLED
    objects = platform.objects()
    wait_for(lambda: objects.list_keys(f"operations/{operation.id}") == [], 30, "the scratch discarded")
    assert get(platform, operation.id).state == CANCELLED


def test_a_stream_partition_with_another_schema_fails_the_operation_naming_it(platform: Platform,  # noqa: F811
                                                                             data: dict[str, str]) -> None:
    objects = platform.objects()
    stream = unique("mixed")
    put_dataset(objects, stream, STREAM, partitions=2)
    spec = FeatureSpec(categorical=TINY_SPEC.categorical, numerical=())
    rows = tiny_clicks(60)
    DatasetStore(objects).write_partition(stream, datetime(2027, 1, 1, tzinfo=timezone.utc), split_table(
        SplitArrays(categorical=rows.categorical, numerical=rows.numerical[:, :0], label=rows.label), spec))
    final = watch(platform, compute(platform, data, stream=stream, windows=4).id)[-1]
    assert final.state == FAILED and final.error.code_name == "INVALID_ARGUMENT"
    assert f"{stream}/ts=20270101T000000Z" in final.error.message


def test_live_drift_updates_and_gauges(platform: Platform, data: dict[str, str]) -> None:  # noqa: F811
    name = unique("live")
    partitions = DatasetStore(platform.objects()).partitions(data["stream"])
    config = drift_detector_pb2.DriftConfig(windows=4, window_rows=400)

    def update(partition: str, state: str = name, **fields):  # noqa: ANN003, ANN202
        request = drift_detector_pb2.UpdateDriftRequest(name=state, partition=common_pb2.DatasetRef(
            name=data["stream"], position=common_pb2.DatasetPosition(partition=partition)), **fields)
        return stub(platform).UpdateDrift(request, timeout=60).state

    with pytest.raises(grpc.RpcError) as caught:
        update(partitions[0])  # no state yet and no reference to create it from
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    update(partitions[0], reference=common_pb2.DatasetRef(name=data["reference"]), config=config)
    state = update(partitions[1])
    controller = _core_controller({"windows": 4}, 400)
    _feed(controller, STREAM.slice(0, 1500))
    assert state.replay_ratio == pytest.approx(controller.ratio, rel=1e-12)
    assert state.rows == 1500 and state.windows == 3 and state.source == "stream"
    assert list(state.partitions) == [f"{data['stream']}/{p}" for p in partitions[:2]]
    got = stub(platform).GetDrift(drift_detector_pb2.GetDriftRequest(name=name), timeout=10).state
    assert got == state
    assert update(partitions[0]) == state  # fed already: an idempotent replay
    other = unique("live-late")
    update(partitions[3], state=other, reference=common_pb2.DatasetRef(name=data["reference"]), config=config)
    with pytest.raises(grpc.RpcError) as caught:
        update(partitions[2], state=other)  # older than the latest fed
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    port = platform.stack.metrics_ports["drift-detector"]
    price = next(f.mean for f in state.features if f.feature == "price")

    def gauge() -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
        line = f'crossadapt_drift_divergence{{feature="price",state="{name}"}} '
        found = [row for row in text.splitlines() if row.startswith(line)]
        return float(found[0].split()[-1]) if found else None

    assert wait_for(gauge, 15, "the divergence gauge") == pytest.approx(price, rel=1e-9, abs=1e-12)
