"""Work lost by the broker is re-sent by the stall watchdog of the drift-detector's and the offline
distiller's servers (services.common.watchdog), from the stage the record names, and the operations
then finish with the uninterrupted result.

Real gRPC servers and a real Celery worker on the embedded (files-only) platform. The loss is made
exact: both operations are started while no worker runs, their task messages are deleted from the
broker's queue folder (what a broker that went away at the wrong moment leaves behind), and the worker
starts only once each server's watchdog has re-sent the stalled operation.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from distiller_fixtures import Stores, platform_settings, project, publish_teacher, tiny_clicks, write_dataset
from services.common.model_io import load_model
from services.common.operations import OperationState, open_operation_store
from services.common.proto import common_pb2, drift_detector_pb2, offline_distiller_pb2
from services.local.stack import LocalPlatform, wait_for

pytestmark = pytest.mark.slow
SERVICES = ("drift-detector", "offline-distiller")
STALL_S = 4.0


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[LocalPlatform]:
    stack = LocalPlatform.embedded(tmp_path / "stack", stall_s=str(STALL_S), stall_max_resends="20",
                                   watch_poll_s="0.1", broker_polling_interval_s="0.1")
    try:
        stack.start(servers=SERVICES)
        yield stack
    finally:
        stack.stop()


def test_lost_work_is_resent_by_each_servers_watchdog_and_the_operations_finish(platform: LocalPlatform) -> None:
    settings = platform_settings(platform)
    stores, operations = Stores.of(settings), open_operation_store(settings)
    teacher = publish_teacher(stores.checkpoints, "ctr/teacher")
    projected = project(stores.checkpoints, operations, teacher, "ctr/projected", width=6)
    write_dataset(stores.datasets, "ctr/sample", tiny_clicks(800, seed=11), partitions=2)
    write_dataset(stores.datasets, "ctr/reference", tiny_clicks(1200, seed=12), partitions=3)

    distillation = platform.stub("offline-distiller").StartDistillation(offline_distiller_pb2.StartDistillationRequest(
        student=common_pb2.CheckpointRef(name=projected.name, version=projected.version),
        teacher=common_pb2.CheckpointRef(name=teacher.name), sample=common_pb2.DatasetRef(name="ctr/sample"),
        student_name="ctr/student", student_model=offline_distiller_pb2.ModelSpec(architecture="mlp", hidden=[8]),
        config=offline_distiller_pb2.DistillationConfig(batch_size=100, frozen_epochs=1, joint_epochs=1)),
        timeout=30).operation
    drift = platform.stub("drift-detector").ComputeDrift(drift_detector_pb2.ComputeDriftRequest(
        reference=common_pb2.DatasetRef(name="ctr/reference"), config=drift_detector_pb2.DriftConfig(windows=4)),
        timeout=30).operation
    queue = settings.broker_dir / "queue"
    lost = [path for path in queue.iterdir() if path.is_file()]
    assert len(lost) == 2  # one task message per operation, nobody consuming them
    for path in lost:
        path.unlink()

    ids = (distillation.id, drift.id)
    wait_for(lambda: all(operations.get(i).resends >= 1 for i in ids), 6 * STALL_S, "both watchdogs re-sending")
    assert all(operations.get(i).state == OperationState.PENDING for i in ids)  # nothing ran the lost messages
    platform.start(workers=("w1",), queue_names=SERVICES)
    deadline = time.monotonic() + 180
    while not all(operations.get(i).terminal for i in ids):
        assert time.monotonic() < deadline, [operations.get(i) for i in ids]
        time.sleep(0.3)

    distilled, measured = operations.get(distillation.id), operations.get(drift.id)
    assert distilled.state == OperationState.SUCCEEDED, distilled.error
    assert measured.state == OperationState.SUCCEEDED, measured.error
    assert distilled.resends >= 1 and measured.resends >= 1
    student, published = load_model(stores.checkpoints, "ctr/student", distilled.result["version"])
    assert published.manifest.extra["operation_id"] == distillation.id and published.manifest.parent == teacher.ref
    assert {r["name"] for r in published.manifest.extra["phases"]} == {"frozen", "joint"}
    reference = measured.details["reference"]  # Δ_shift of the reference windows and the ratio it sets
    assert 0.0 <= float(reference["replay_ratio"]) <= 1.0 and float(reference["shift"]) >= 0.0
    assert student.embedding.get_table("user").shape[1] == 6  # the projected width
