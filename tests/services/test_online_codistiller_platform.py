"""The online co-distiller through its gRPC API with real Redis, SeaweedFS (S3), a gRPC server and Celery workers.

The stream is a time-partitioned dataset in the store. Checked: every checkpoint publishes teacher
vM then student vN with the stream position inside; the end of the stream ends the operation;
`follow` picks up a partition appended later; a partition with another schema fails the operation
naming it; kill -9 of the whole worker resumes at the last checkpoint's position with 0 rows skipped
and at most one checkpoint interval replayed (rows counted per partition), ending where an
uninterrupted run ends; the same kill after the models grew to a newer vocabulary version (#16)
resumes with grown models and ends at the uninterrupted growing run's grown checkpoint; the same kill
with a rolling drift estimate and a collaborative teacher (#11) restores both from the checkpoint and
ends at the uninterrupted run's models; bad requests are refused at Start.
"""

from __future__ import annotations

import uuid
from datetime import timedelta

import grpc
import numpy as np
import pytest
import torch

from distiller_fixtures import (
    EPOCH,
    GROWN_SPEC,
    GROWN_VOCABULARY,
    TINY_SPEC,
    TINY_VOCABULARY,
    VOCAB_HASH,
    HookedPlatform,
    Stores,
    cancel_operation,
    details,
    distiller_platform,  # noqa: F401 - fixture
    distiller_stores,  # noqa: F401 - fixture
    get_operation,
    kill_task_worker,
    platform_settings,
    project,
    publish_teacher,
    reference_codistillation,
    replayed_rows,
    spare_worker,
    tiny_clicks,
    tiny_model,
    wait_terminal,
    write_dataset,
    write_growing_stream,
)
from crossadapt.models.spec import FeatureSpec
from services.common.model_io import load_model, load_vocabulary, publish_model
from services.common.operations import open_operation_store
from services.common.proto import common_pb2, online_codistiller_pb2
from services.local.stack import wait_for

SERVICE = "online-codistiller"
PARTITION_ROWS, PARTITIONS, BATCH, EVERY = 300, 4, 50, 4
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def models(distiller_platform: HookedPlatform, distiller_stores: Stores) -> dict:
    checkpoints = distiller_stores.checkpoints
    teacher = publish_teacher(checkpoints, "stream/teacher", seed=2)
    student = publish_model(checkpoints, "stream/student", tiny_model(6, seed=3), feature_spec=TINY_SPEC,
                            vocab_hash=VOCAB_HASH, vocabulary=TINY_VOCABULARY)
    write_dataset(distiller_stores.datasets, "stream/replay", tiny_clicks(600, seed=21))
    return {"teacher": teacher, "student": student}


def new_stream(stores: Stores, partitions: int = PARTITIONS) -> str:
    name = f"stream/clicks-{uuid.uuid4().hex[:8]}"
    write_dataset(stores.datasets, name, tiny_clicks(PARTITION_ROWS * partitions, seed=31), partitions=partitions)
    return name


def request(models: dict, stream: str, **overrides) -> online_codistiller_pb2.StartCoDistillationRequest:  # noqa: ANN003
    config = dict(batch_size=BATCH, checkpoint_every_batches=EVERY, teacher_update_interval=3, window_batches=2,
                  drift=online_codistiller_pb2.CoDistillationDriftSettings(max_replay=0.2, windows=4, bins=8))
    config.update(overrides.pop("config", {}))
    suffix = uuid.uuid4().hex[:8]
    fields = dict(
        student=common_pb2.CheckpointRef(name=models["student"].name, version=models["student"].version),
        teacher=common_pb2.CheckpointRef(name=models["teacher"].name),
        stream=common_pb2.DatasetRef(name=stream), replay=common_pb2.DatasetRef(name="stream/replay"),
        student_name=f"stream/student-{suffix}", teacher_name=f"stream/teacher-{suffix}",
        config=online_codistiller_pb2.CoDistillationConfig(**config),
    )
    fields.update(overrides)
    return online_codistiller_pb2.StartCoDistillationRequest(**fields)


def start(platform: HookedPlatform, req) -> common_pb2.Operation:  # noqa: ANN001
    return platform.stub(SERVICE).StartCoDistillation(req, timeout=30).operation


def test_stream_is_consumed_in_order_with_teacher_and_student_published_at_each_checkpoint(
        distiller_platform: HookedPlatform, distiller_stores: Stores, models: dict) -> None:
    platform, checkpoints = distiller_platform, distiller_stores.checkpoints
    platform.pause(0)
    stream = new_stream(distiller_stores)
    req = request(models, stream)
    operation = start(platform, req)
    final = wait_terminal(platform, SERVICE, operation.id)
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
    partitions = distiller_stores.datasets.partitions(stream)
    students = [checkpoints.resolve(req.student_name, v) for v in checkpoints.versions(req.student_name)]
    teachers = {f"{req.teacher_name}/{v}" for v in checkpoints.versions(req.teacher_name)}
    batches = PARTITIONS * PARTITION_ROWS // BATCH
    assert len(students) == batches // EVERY == len(teachers)
    positions = [(s.manifest.extra["position"]["partition"], s.manifest.extra["position"]["row"]) for s in students]
    assert positions == sorted(positions, key=lambda p: (partitions.index(p[0]), p[1]))  # time order
    assert positions[-1] == (partitions[-1], PARTITION_ROWS)
    assert all(s.manifest.extra["teacher"] in teachers for s in students)
    assert students[0].manifest.parent == models["student"].ref
    assert [s.manifest.parent for s in students[1:]] == [s.ref for s in students[:-1]]
    last = students[-1].manifest.extra
    assert last["rows_by_partition"] == {p: PARTITION_ROWS for p in partitions}
    assert last["replay_rows"] > 0 and last["prequential"]["windows"] == batches // 2
    assert (final.checkpoint.name, final.checkpoint.version) == (students[-1].name, students[-1].version)
    assert final.progress == 1.0 and details(final)["position"]["row"] == PARTITION_ROWS
    teacher_now, _ = load_model(checkpoints, *last["teacher"].rsplit("/", 1))
    teacher_then, _ = load_model(checkpoints, models["teacher"].name, models["teacher"].version)
    assert not torch.equal(teacher_now.embedding.table.weight, teacher_then.embedding.table.weight)  # co-evolved


def test_follow_consumes_a_partition_appended_later_until_cancelled(
        distiller_platform: HookedPlatform, distiller_stores: Stores, models: dict) -> None:
    platform = distiller_platform
    platform.pause(0)
    stream = new_stream(distiller_stores, partitions=2)
    operation = start(platform, request(models, stream, follow=True))
    first = distiller_stores.datasets.partitions(stream)
    wait_for(lambda: {line[1] for line in platform.hook_log(operation.id)} == set(first) and
             any(line[1] == first[-1] and int(line[3]) == PARTITION_ROWS for line in platform.hook_log(operation.id)),
             60, "the first two partitions")
    assert get_operation(platform, SERVICE, operation.id).state == common_pb2.OPERATION_STATE_RUNNING  # waiting
    later = distiller_stores.datasets.write_partition(
        stream, EPOCH + timedelta(hours=5), _table(tiny_clicks(PARTITION_ROWS, seed=41, first_timestamp=10**6)))
    wait_for(lambda: any(line[1] == later and int(line[3]) == PARTITION_ROWS for line in platform.hook_log(operation.id)),
             60, "the appended partition")
    cancelled = cancel_operation(platform, SERVICE, operation.id)
    assert cancelled.state == common_pb2.OPERATION_STATE_CANCELLED
    final = wait_terminal(platform, SERVICE, operation.id)
    assert final.state == common_pb2.OPERATION_STATE_CANCELLED
    consumed = [(line[1], int(line[2]), int(line[3])) for line in platform.hook_log(operation.id)]
    assert [p for p, _, _ in consumed] == sorted((p for p, _, _ in consumed), key=[*first, later].index)


def test_a_partition_with_another_schema_fails_the_operation_naming_it(
        distiller_platform: HookedPlatform, distiller_stores: Stores, models: dict) -> None:
    platform = distiller_platform
    platform.pause(0)
    stream = new_stream(distiller_stores, partitions=2)
    other = FeatureSpec(categorical=TINY_SPEC.categorical, numerical=("price", "discount"))
    arrays = tiny_clicks(PARTITION_ROWS, seed=5)
    arrays = type(arrays)(categorical=arrays.categorical, label=arrays.label, timestamp=arrays.timestamp,
                          numerical=np.concatenate([arrays.numerical, arrays.numerical], axis=1))
    bad = write_dataset(distiller_stores.datasets, stream, arrays, spec=other, start=EPOCH + timedelta(hours=3))[0]
    req = request(models, stream)
    operation = start(platform, req)
    final = wait_terminal(platform, SERVICE, operation.id)
    assert final.state == common_pb2.OPERATION_STATE_FAILED
    assert final.error.code_name in ("INVALID_ARGUMENT", "FAILED_PRECONDITION") and bad in final.error.message
    checkpoints = distiller_stores.checkpoints
    assert checkpoints.versions(req.student_name)  # what came before it stays published, complete


def test_bad_requests_are_refused_at_start(distiller_platform: HookedPlatform, distiller_stores: Stores,
                                           models: dict) -> None:
    platform, stores = distiller_platform, distiller_stores
    stream = new_stream(stores, partitions=1)
    projected = project(stores.checkpoints, open_operation_store(platform_settings(platform)), models["teacher"],
                        "stream/projected", width=6)
    write_dataset(stores.datasets, "stream/other-vocab", tiny_clicks(50), vocab_hash="1" * 64)
    cases = [
        (request(models, "stream/none"), grpc.StatusCode.NOT_FOUND, "stream"),
        (request(models, stream, replay=common_pb2.DatasetRef(name="stream/no-pool")), grpc.StatusCode.NOT_FOUND,
         "replay"),
        (request(models, stream, student=common_pb2.CheckpointRef(name=projected.name)),
         grpc.StatusCode.FAILED_PRECONDITION, "student"),
        (request(models, stream, teacher_name="same", student_name="same"), grpc.StatusCode.INVALID_ARGUMENT,
         "teacher_name"),
        (request(models, stream, config={"drift": online_codistiller_pb2.CoDistillationDriftSettings(low=0.5, high=0.1)}),
         grpc.StatusCode.INVALID_ARGUMENT, "config.drift"),
        (request(models, stream, config={"teacher_update_interval": 0}), grpc.StatusCode.INVALID_ARGUMENT,
         "config.teacher_update_interval"),
        (request(models, "stream/other-vocab"), grpc.StatusCode.INVALID_ARGUMENT, "vocabulary"),
        (positioned(request(models, stream), "yesterday"), grpc.StatusCode.INVALID_ARGUMENT,
         "stream.position.partition"),
    ]
    for req, code, where in cases:
        with pytest.raises(grpc.RpcError) as error:
            start(platform, req)
        assert error.value.code() == code, (where, error.value.details())
        assert where in error.value.details(), (where, error.value.details())


def test_killed_worker_resumes_at_its_position_without_skipping_a_row(
        distiller_platform: HookedPlatform, distiller_stores: Stores, models: dict) -> None:
    """kill -9 of the whole worker (Redis redelivers after its visibility timeout to a new worker)."""
    platform, stores = distiller_platform, distiller_stores
    stream = new_stream(stores)
    req = request(models, stream)
    spare_worker(platform)
    platform.pause(0.12)
    try:
        operation = start(platform, req)
        wait_for(lambda: "student" in details(get_operation(platform, SERVICE, operation.id)), 60, "a checkpoint")
        wait_for(lambda: len(platform.hook_log(operation.id)) >= EVERY + 2, 60, "more batches")
        killed_at = kill_task_worker(platform, SERVICE, operation.id)
        platform.pause(0)
        final = wait_terminal(platform, SERVICE, operation.id, timeout=90)
    finally:
        platform.pause(0)
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
    log = platform.hook_log(operation.id)
    pids = [line[0] for line in log]
    assert len(set(pids)) == 2 and pids.index(pids[-1]) >= killed_at - 1  # two deliveries, in sequence
    partitions = stores.datasets.partitions(stream)
    replayed = replayed_rows(log, partitions, PARTITION_ROWS)
    assert 0 < replayed <= EVERY * BATCH, replayed  # something was replayed, at most one interval
    student = stores.checkpoints.resolve(final.checkpoint.name, final.checkpoint.version)
    assert student.manifest.extra["rows_by_partition"] == {p: PARTITION_ROWS for p in partitions}  # counted once
    for name in (req.student_name, req.teacher_name):  # every visible version is complete (sha256-verified load)
        for version in stores.checkpoints.versions(name):
            load_model(stores.checkpoints, name, version)

    # The same plan, uninterrupted, in this process: the resumed run ends at the same student and teacher.
    reference_student, reference_teacher = reference_codistillation(stores, platform, operation.id)
    resumed, _ = load_model(stores.checkpoints, student.name, student.version)
    teacher, _ = load_model(stores.checkpoints, *student.manifest.extra["teacher"].rsplit("/", 1))
    for ours, theirs in ((resumed, reference_student), (teacher, reference_teacher)):
        for name, value in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_killed_worker_resumes_rolling_drift_and_a_collaborative_teacher_from_the_checkpoint(
        distiller_platform: HookedPlatform, distiller_stores: Stores, models: dict) -> None:
    """kill -9 of the whole worker with config.drift.rolling and config.collaborative (#11): every checkpoint's
    run state holds the rolling Δ_shift estimate (windows, rows, shift) and the collaborative teacher's
    schedule; the resumed run continues them and ends at the uninterrupted run's student, teacher, rolling
    estimate and collaboration share."""
    from crossadapt.transfer.online.replay import ReplayController
    from services.common.training_state import read_state
    from services.online_codistiller.pipeline import RUN_STATE_FILE, restored_state

    platform, stores = distiller_platform, distiller_stores
    stream = new_stream(stores)
    drift = online_codistiller_pb2.CoDistillationDriftSettings(max_replay=0.3, windows=3, bins=8, low=0.001,
                                                               high=0.5, rolling=True, window_rows=50)
    req = request(models, stream, config={
        "drift": drift, "collaborative": online_codistiller_pb2.CollaborativeCoDistillation(gate="all")})
    spare_worker(platform)
    platform.pause(0.12)
    try:
        operation = start(platform, req)
        wait_for(lambda: "student" in details(get_operation(platform, SERVICE, operation.id)), 60, "a checkpoint")
        wait_for(lambda: len(platform.hook_log(operation.id)) >= EVERY + 2, 60, "more batches")
        kill_task_worker(platform, SERVICE, operation.id)
        platform.pause(0)
        final = wait_terminal(platform, SERVICE, operation.id, timeout=90)
    finally:
        platform.pause(0)
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
    assert len({line[0] for line in platform.hook_log(operation.id)}) == 2  # resumed by a second worker
    checkpoints = stores.checkpoints
    # A mid-stream checkpoint: its run state restores the rolling estimate its manifest states.
    first = checkpoints.resolve(req.student_name, checkpoints.versions(req.student_name)[0])
    rolling = first.manifest.extra["rolling_drift"]
    assert rolling["rows"] == EVERY * BATCH and rolling["windows"] == EVERY * BATCH // 50
    state = restored_state(read_state(checkpoints, first, RUN_STATE_FILE))
    from services.online_codistiller.plan import CoDistillationPlan

    record = open_operation_store(platform_settings(platform)).get(operation.id)
    plan_settings = CoDistillationPlan.model_validate(record.params["plan"]).settings
    pool = tiny_clicks(600, seed=21)
    controller = ReplayController.from_training_pool(
        plan_settings.replay_config(), pool.categorical, pool.numerical, seed=plan_settings.seed,
        feature_names=[f.name for f in TINY_SPEC.categorical] + list(TINY_SPEC.numerical),
        vocab_sizes=[f.vocab_size for f in TINY_SPEC.categorical])
    initial_shift = controller.shift  # the replay pool's Δ_shift
    controller.load_state_dict(state["replay"])
    assert (controller.shift, controller.ratio) == (rolling["shift"], rolling["replay_ratio"])
    assert controller.history[-1].reason == "window" and controller.shift != initial_shift  # the stream's estimate
    assert "collaboration" in state["teacher"]  # the collaborative teacher's schedule
    assert first.manifest.extra["collaboration_share"] == 1.0  # gate "all": every row teaches
    # The same plan, uninterrupted, in this process: the resumed run ends at the same models and estimate.
    student = checkpoints.resolve(final.checkpoint.name, final.checkpoint.version)
    assert student.manifest.extra["rolling_drift"]["rows"] == PARTITIONS * PARTITION_ROWS
    reference_student, reference_teacher = reference_codistillation(stores, platform, operation.id)
    resumed, _ = load_model(checkpoints, student.name, student.version)
    teacher, _ = load_model(checkpoints, *student.manifest.extra["teacher"].rsplit("/", 1))
    for ours, theirs in ((resumed, reference_student), (teacher, reference_teacher)):
        for name, value in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_killed_worker_resumes_a_growing_codistillation_with_grown_models(
        distiller_platform: HookedPlatform, distiller_stores: Stores, models: dict) -> None:
    """kill -9 of the whole worker after a grown checkpoint (#16): the stream's first partition is of the
    models' vocabulary (version 1), the next three of version 2 (6 new users); the new worker must rebuild
    both models at the grown checkpoint's sizes (with their optimiser and run state) and carry on growing."""
    platform, stores = distiller_platform, distiller_stores
    stream = f"stream/growing-{uuid.uuid4().hex[:8]}"
    partitions = write_growing_stream(stores.datasets, stream, old_rows=PARTITION_ROWS,
                                      new_rows=(PARTITIONS - 1) * PARTITION_ROWS, new_partitions=PARTITIONS - 1)
    req = request(models, stream, config={"grow_vocabulary": True})

    def grown_checkpoint() -> bool:
        ref = details(get_operation(platform, SERVICE, operation.id)).get("student")
        return ref is not None and stores.checkpoints.resolve(*ref.rsplit("/", 1)).manifest.feature_spec == GROWN_SPEC

    spare_worker(platform)
    platform.pause(0.12)
    try:
        operation = start(platform, req)
        wait_for(grown_checkpoint, 60, "a grown checkpoint")
        grown_at = len(platform.hook_log(operation.id))
        wait_for(lambda: len(platform.hook_log(operation.id)) >= grown_at + 2, 60, "more batches")
        killed_at = kill_task_worker(platform, SERVICE, operation.id)
        platform.pause(0)
        final = wait_terminal(platform, SERVICE, operation.id, timeout=90)
    finally:
        platform.pause(0)
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
    log = platform.hook_log(operation.id)
    pids = [line[0] for line in log]
    resumed_at = pids.index(pids[-1])
    assert len(set(pids)) == 2 and resumed_at >= killed_at - 1  # two deliveries, in sequence
    assert log[resumed_at][1] != partitions[0]  # the second resumed from a grown checkpoint (version-2 rows)
    replayed = replayed_rows(log, partitions, PARTITION_ROWS)
    assert 0 < replayed <= EVERY * BATCH, replayed  # something was replayed, at most one interval
    student = stores.checkpoints.resolve(final.checkpoint.name, final.checkpoint.version)
    assert student.manifest.extra["rows_by_partition"] == {p: PARTITION_ROWS for p in partitions}  # counted once
    teacher_ref = student.manifest.extra["teacher"]
    for published in (student, stores.checkpoints.resolve(*teacher_ref.rsplit("/", 1))):
        manifest = published.manifest
        assert manifest.feature_spec == GROWN_SPEC  # grown to the stream's version...
        assert (manifest.vocab_hash, manifest.extra["vocab_version"]) == (GROWN_VOCABULARY.hash, 2)
        assert load_vocabulary(stores.checkpoints, published).hash == GROWN_VOCABULARY.hash  # ...with its values
    for name in (req.student_name, req.teacher_name):  # every visible version is complete (sha256-verified load)
        for version in stores.checkpoints.versions(name):
            load_model(stores.checkpoints, name, version)

    # The same plan, uninterrupted, in this process: the resumed run ends at the same grown student and
    # teacher bit for bit (tolerance 0, as measured): the resume restores the grown weights, the Adam
    # moments of every row (the grown ones included) and the run state exactly, and the worker and this
    # process run the same kernels on the same CPUs (the core sets torch's threads the same way in both;
    # these tensors are in any case below its intra-op parallel grain size, so each sum has one order).
    reference_student, reference_teacher = reference_codistillation(stores, platform, operation.id)
    resumed, _ = load_model(stores.checkpoints, student.name, student.version)
    teacher, _ = load_model(stores.checkpoints, *teacher_ref.rsplit("/", 1))
    for ours, theirs in ((resumed, reference_student), (teacher, reference_teacher)):
        assert ours.embedding.get_table("user").shape[0] == GROWN_SPEC.categorical[0].vocab_size
        for name, value in theirs.state_dict().items():
            torch.testing.assert_close(ours.state_dict()[name], value, rtol=0, atol=0)


# ---- helpers --------------------------------------------------------------------------------------
def positioned(req, partition: str):  # noqa: ANN001, ANN201
    req.stream.position.partition = partition
    return req


def _table(arrays):  # noqa: ANN001, ANN202
    from services.common.model_io import split_table

    return split_table(arrays, TINY_SPEC, VOCAB_HASH)
