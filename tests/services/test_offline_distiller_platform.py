"""The offline-distiller through its gRPC API with real Redis, SeaweedFS (S3), a gRPC server and a Celery worker.

The student is the projector's real output; the sample a dataset in the store. Faults: a cancel, a
killed worker process (resumed from its last checkpoint: steps re-done ≤ one checkpoint interval,
result equal to an uninterrupted run), and bad requests refused at Start before any worker runs.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from distiller_fixtures import (
    VOCAB_HASH,
    HookedPlatform,
    Stores,
    cancel_operation,
    details,
    distiller_platform,  # noqa: F401 - fixture
    distiller_stores,  # noqa: F401 - fixture
    get_operation,
    kill_worker_process,
    platform_settings,
    project,
    publish_teacher,
    tiny_clicks,
    wait_terminal,
    watch_operation,
    write_dataset,
)
from services.common.model_io import load_model, load_vocabulary
from services.common.operations import open_operation_store
from services.common.proto import common_pb2, offline_distiller_pb2, operations_pb2
from services.common.storage.tables import read_table

SERVICE = "offline-distiller"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inputs(distiller_platform: HookedPlatform, distiller_stores: Stores) -> dict:
    """A teacher, its projection to width 6 (the projector's pipeline), a sample with teacher logits and one without."""
    stores = distiller_stores
    teacher = publish_teacher(stores.checkpoints, "ctr/teacher")
    projected = project(stores.checkpoints, open_operation_store(platform_settings(distiller_platform)), teacher,
                        "ctr/projected", width=6)
    model, _ = load_model(stores.checkpoints, teacher.name, teacher.version)
    from crossadapt.transfer.offline.distillation import cache_teacher_logits

    sample = tiny_clicks(1200, seed=11)
    write_dataset(stores.datasets, "ctr/sample", sample.with_teacher_logit(cache_teacher_logits(model, sample)),
                  partitions=2)
    write_dataset(stores.datasets, "ctr/sample-raw", sample, partitions=1)
    write_dataset(stores.datasets, "ctr/valid", tiny_clicks(400, seed=12))
    return {"teacher": teacher, "projected": projected, "platform": distiller_platform, "stores": stores}


def request(inputs: dict, **overrides) -> offline_distiller_pb2.StartDistillationRequest:  # noqa: ANN003
    config = overrides.pop("config", {})
    fields = dict(
        student=common_pb2.CheckpointRef(name=inputs["projected"].name, version=inputs["projected"].version),
        teacher=common_pb2.CheckpointRef(name=inputs["teacher"].name),
        sample=common_pb2.DatasetRef(name="ctr/sample"),
        student_name=f"ctr/student-{uuid.uuid4().hex[:8]}",
        student_model=offline_distiller_pb2.ModelSpec(architecture="mlp", hidden=[8]),
        config=offline_distiller_pb2.DistillationConfig(**{"batch_size": 100, **config}),
    )
    fields.update(overrides)
    return offline_distiller_pb2.StartDistillationRequest(**fields)


def start(platform: HookedPlatform, req) -> common_pb2.Operation:  # noqa: ANN001
    return platform.stub(SERVICE).StartDistillation(req, timeout=30).operation


def test_distillation_reports_per_epoch_and_publishes_the_student_with_its_parent(
        distiller_platform: HookedPlatform, distiller_stores: Stores, inputs: dict) -> None:
    platform, checkpoints = distiller_platform, distiller_stores.checkpoints
    platform.pause(0)
    req = request(inputs, validation=common_pb2.DatasetRef(name="ctr/valid"),
                  config={"frozen_epochs": 1, "joint_epochs": 2, "seed": 3}, request_id="happy-1")
    operation = start(platform, req)
    assert operation.state == common_pb2.OPERATION_STATE_PENDING
    assert start(platform, req).id == operation.id  # idempotent on request_id
    updates = watch_operation(platform, SERVICE, operation.id)
    final = updates[-1]
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
    # Watch polls the store and may coalesce a short stage on a loaded machine; what it shows must be in
    # the order the stages ran, and the history below proves each phase ran its epochs.
    seen = [stage for stage in dict.fromkeys(u.stage for u in updates) if stage in ("frozen", "joint", "done")]
    assert seen == sorted(seen, key=["frozen", "joint", "done"].index) and seen[-1] == "done"
    progress = [u.progress for u in updates]
    assert progress == sorted(progress) and progress[-1] == 1.0
    history = details(final)["history"]
    assert [(row["phase"], len(row["train_loss"])) for row in history] == [("frozen", 1), ("joint", 2)]

    student = checkpoints.resolve(final.checkpoint.name, final.checkpoint.version)
    manifest = student.manifest
    assert manifest.parent == inputs["teacher"].ref and manifest.architecture == "mlp"
    assert manifest.extra["projected_student"] == inputs["projected"].ref
    assert set(manifest.extra["stage_seconds"]) >= {"frozen", "joint", "train_total"}
    assert manifest.extra["config"]["distillation"]["joint_epochs"] == 2 and manifest.vocab_hash == VOCAB_HASH
    assert manifest.metrics["valid_auc"] > 0.6  # learned from the teacher and the labels
    assert load_vocabulary(checkpoints, student).hash == VOCAB_HASH
    model, _ = load_model(checkpoints, student.name, student.version)
    assert model.config.embedding_dim == 6
    assert checkpoints.versions(f"wip/offline-distiller/{operation.id}") == []  # work in progress removed
    # The servers validated, recorded and sent the work without loading the engine; the workers loaded it before
    # their pools forked (tests/platform/test_platform_server_imports.py has why).
    def torch_mapped(process) -> bool:  # noqa: ANN001
        return "libtorch" in Path(f"/proc/{process.pid}/maps").read_text()

    assert not any(torch_mapped(server) for server in platform.servers.values())
    assert all(torch_mapped(worker) for worker in platform.workers.values())
    with pytest.raises(grpc.RpcError) as error:  # same key, other parameters
        start(platform, request(inputs, request_id="happy-1"))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in error.value.details()


def test_adaptive_lambda_reads_the_validation_tail_and_shows_its_trace_in_the_operation(inputs: dict) -> None:
    """Adaptive λ through gRPC and the worker: the operation's details say why λ moved (its trace, as the
    student's manifest records it); the validation split's old partitions are never read (garbage here)."""
    platform, stores = inputs["platform"], inputs["stores"]
    checkpoints, datasets = stores.checkpoints, stores.datasets
    platform.pause(0)
    partitions = write_dataset(datasets, "ctr/valid-long", tiny_clicks(400, seed=13), partitions=5)
    # 80 rows each: the newest two hold the 150 rows measured. Start reads the first one's footer (the
    # schema); the task must read neither of the two before the tail.
    for partition in partitions[1:3]:
        datasets.objects.put_bytes(datasets._key("ctr/valid-long", partition), b"not parquet")
    adaptive = common_pb2.AdaptiveKD(gap_onset=0.0, gap_saturation=0.01, offline_eval_every_steps=3,
                                     offline_valid_rows=150,
                                     offline=common_pb2.AdaptiveSchedule(warmup=0, ema_window=2, max_change=0.2))
    operation = start(platform, request(inputs, validation=common_pb2.DatasetRef(name="ctr/valid-long"),
                                        config={"frozen_epochs": 1, "joint_epochs": 1, "adaptive": adaptive}))
    updates = watch_operation(platform, SERVICE, operation.id)
    final = updates[-1]
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
    shown = details(final)["adaptive"]
    trace = checkpoints.resolve(final.checkpoint.name, final.checkpoint.version).manifest.extra["kd_weight_trace"]
    assert shown["evaluations"] == len(trace) >= 6 and shown["valid_rows"] == 150 and shown["every_steps"] == 3
    assert shown["trace"] == [[s, round(g, 5), round(w, 4)] for s, g, w in trace]  # JSON numbers: 3.0 == 3
    assert shown["lambda"] == round(trace[-1][2], 4) < 0.5 and shown["teacher_valid_logloss"] > 0  # λ moved


def test_frozen_phase_keeps_the_projected_tables_and_teacher_scores_a_raw_sample(
        distiller_platform: HookedPlatform, distiller_stores: Stores, inputs: dict) -> None:
    """Phase 1 freezes the embeddings: the published student's tables are exactly the projector's output.
    The task trains data parallel here: 2 DDP processes (the worker's and one it starts), gloo on 127.0.0.1."""
    platform, checkpoints = distiller_platform, distiller_stores.checkpoints
    platform.pause(0)
    operation = start(platform, request(inputs, sample=common_pb2.DatasetRef(name="ctr/sample-raw"),
                                        config={"frozen_epochs": 1, "joint_epochs": 0, "world_size": 2}))
    final = wait_terminal(platform, SERVICE, operation.id)
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
    student = checkpoints.resolve(final.checkpoint.name, final.checkpoint.version)
    projected = inputs["projected"]
    assert sorted(student.manifest.extra["initial_tables"]["projected"]) == ["__numerical__", "item", "user"]
    for table in ("user", "item", "__numerical__"):
        np.testing.assert_array_equal(read_table(checkpoints, student, table), read_table(checkpoints, projected, table))
    assert student.manifest.extra["stage_seconds"]["teacher_logits"] > 0  # the raw sample was scored once
    assert student.manifest.extra["config"]["world_size"] == 2


def test_a_student_of_the_teachers_own_network_starts_from_it_unless_told_not_to(
        distiller_platform: HookedPlatform, distiller_stores: Stores, inputs: dict) -> None:
    """reuse_teacher_network (unset: true): the teacher's MLP at its own width takes the teacher's network;
    with steps too small to move anything, the published student scores as the teacher does. false: the
    paper's student, a random network over the projected tables."""
    platform, checkpoints = distiller_platform, distiller_stores.checkpoints
    platform.pause(0)
    own_width = project(checkpoints, open_operation_store(platform_settings(platform)), inputs["teacher"],
                        "ctr/projected-own-width", width=4)
    teacher, _ = load_model(checkpoints, inputs["teacher"].name, inputs["teacher"].version)
    rows = tiny_clicks(300, seed=13)
    gaps, taken = {}, {}
    for reuse in (None, False):
        flag = {} if reuse is None else {"reuse_teacher_network": reuse}
        operation = start(platform, request(
            inputs, student=common_pb2.CheckpointRef(name=own_width.name, version=own_width.version),
            config={"frozen_epochs": 1, "joint_epochs": 0, "dense_lr": 1e-12, "embedding_lr": 1e-12, **flag}))
        final = wait_terminal(platform, SERVICE, operation.id)
        assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
        student = checkpoints.resolve(final.checkpoint.name, final.checkpoint.version)
        taken[reuse] = student.manifest.extra["initial_tables"]["teacher_network"]
        model, _ = load_model(checkpoints, student.name, student.version)
        with torch.no_grad():
            features = (torch.as_tensor(rows.categorical), torch.as_tensor(rows.numerical))
            gaps[reuse] = float((model.eval()(*features) - teacher.eval()(*features)).abs().max())
    assert taken[None] == ["dnn.layers.0.bias", "dnn.layers.0.weight", "logit_offset", "output.bias", "output.weight"]
    assert taken[False] == []
    assert gaps[None] < 1e-5 and gaps[False] > 1e-2, gaps


def test_cancel_stops_the_task_and_discards_its_outputs(
        distiller_platform: HookedPlatform, distiller_stores: Stores, inputs: dict) -> None:
    platform, checkpoints = distiller_platform, distiller_stores.checkpoints
    platform.pause(0.05)
    try:
        req = request(inputs, config={"frozen_epochs": 1, "joint_epochs": 3, "checkpoint_every_steps": 4})
        operation = start(platform, req)
        assert wait_for_details(platform, operation.id, "checkpoint")
        cancelled = cancel_operation(platform, SERVICE, operation.id)
        assert cancelled.state == common_pb2.OPERATION_STATE_CANCELLED
        steps = len(platform.hook_log(operation.id))
        final = wait_terminal(platform, SERVICE, operation.id)
        assert final.state == common_pb2.OPERATION_STATE_CANCELLED
        wait_until(lambda: not checkpoints.versions(f"wip/offline-distiller/{operation.id}"))
        assert checkpoints.versions(req.student_name) == []  # the claimed version never got a manifest
        # The loop stops at its next progress write: within one report interval (0.2 s) of 0.05 s steps.
        assert len(platform.hook_log(operation.id)) <= steps + 6
    finally:
        platform.pause(0)


@pytest.mark.parametrize("adaptive", [False, True], ids=["fixed-lambda", "adaptive-lambda"])
def test_killed_worker_process_resumes_from_its_last_checkpoint(
        distiller_platform: HookedPlatform, distiller_stores: Stores, inputs: dict, adaptive: bool) -> None:
    """kill -9 of the process running the task: the redelivery resumes at the last checkpoint (steps re-done
    ≤ one interval) and publishes the same student as an uninterrupted run. With adaptive λ (#11) the
    checkpoint carries the controller's state (checked every 3 steps here, so it moves between checkpoints)."""
    platform, stores = distiller_platform, distiller_stores
    every = 5
    extra = {}
    if adaptive:
        extra = {"validation": common_pb2.DatasetRef(name="ctr/valid")}
        adaptive_config = {"adaptive": common_pb2.AdaptiveKD(
            gap_onset=0.0, gap_saturation=0.01, offline_eval_every_steps=3, offline_valid_rows=200,
            offline=common_pb2.AdaptiveSchedule(warmup=0, ema_window=2, max_change=0.2))}
    platform.pause(0.06)
    try:
        req = request(inputs, config={"frozen_epochs": 1, "joint_epochs": 2, "checkpoint_every_steps": every,
                                      "seed": 5, **(adaptive_config if adaptive else {})}, **extra)
        operation = start(platform, req)
        wait_for_details(platform, operation.id, "checkpoint")
        wait_until(lambda: len(platform.hook_log(operation.id)) >= 8)
        victim = int(details(get_operation(platform, SERVICE, operation.id))["worker"]["pid"])
        kill_worker_process(victim)
        platform.pause(0)
        final = wait_terminal(platform, SERVICE, operation.id, timeout=90)
    finally:
        platform.pause(0)
    assert final.state == common_pb2.OPERATION_STATE_SUCCEEDED, final.error
    log = platform.hook_log(operation.id)
    before = [int(step) for pid, event, step in log if int(pid) == victim and event == "step"]
    after = [int(step) for pid, event, step in log if int(pid) != victim and event == "step"]
    assert before and after, log
    resumed_at = after[0] - 1
    assert resumed_at > 0  # not from zero
    redone = max(before) - resumed_at
    assert 0 <= redone <= every, (max(before), resumed_at)
    assert sorted(set(before) | set(after)) == list(range(1, max(after) + 1))  # no step skipped
    published = stores.checkpoints.resolve(final.checkpoint.name, final.checkpoint.version)
    assert published.manifest.extra["resumed_from"].startswith(f"wip/offline-distiller/{operation.id}/")

    # The same plan, uninterrupted, in this process: the resumed run's weights are the same.
    reference = reference_run(stores, platform, operation.id)
    resumed, _ = load_model(stores.checkpoints, published.name, published.version)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-5, atol=1e-6)


def test_bad_requests_are_refused_at_start(distiller_platform: HookedPlatform, distiller_stores: Stores,
                                           inputs: dict) -> None:
    from google.protobuf.struct_pb2 import Struct

    platform = distiller_platform
    options = Struct()
    options.update({"crossing_layers": 2})
    cases = [
        (request(inputs, teacher=common_pb2.CheckpointRef(name="ctr/nope")), grpc.StatusCode.NOT_FOUND, "teacher"),
        (request(inputs, sample=common_pb2.DatasetRef(name="ctr/no-sample")), grpc.StatusCode.NOT_FOUND, "sample"),
        (request(inputs, student=common_pb2.CheckpointRef(name=inputs["projected"].name, version="v9")),
         grpc.StatusCode.INVALID_ARGUMENT, "student.version"),
        (request(inputs, student_model=offline_distiller_pb2.ModelSpec(hidden=[8])),
         grpc.StatusCode.INVALID_ARGUMENT, "student_model.architecture"),
        (request(inputs, student_model=offline_distiller_pb2.ModelSpec(architecture="dcn", options=options)),
         grpc.StatusCode.INVALID_ARGUMENT, "student_model.options.crossing_layers"),
        (request(inputs, student_model=offline_distiller_pb2.ModelSpec(architecture="mlp", embedding_dim=8)),
         grpc.StatusCode.INVALID_ARGUMENT, "student_model.embedding_dim"),
        (request(inputs, config={"temperature": 0}), grpc.StatusCode.INVALID_ARGUMENT, "config.temperature"),
        (request(inputs, config={"frozen_epochs": 0, "joint_epochs": 0}), grpc.StatusCode.INVALID_ARGUMENT, "config"),
        (request(inputs, config={"kd_gate": "teacher_worse"}), grpc.StatusCode.INVALID_ARGUMENT, "config.kd_gate"),
        (request(inputs, config={"target": "purchase"}), grpc.StatusCode.INVALID_ARGUMENT, "config.target"),
        # a pCVR distillation needs the conversion labels, which this click sample lacks
        (request(inputs, config={"target": "conversion"}), grpc.StatusCode.INVALID_ARGUMENT, "config.target"),
        (request(inputs, sample=common_pb2.DatasetRef(name="ctr/other-vocab")), grpc.StatusCode.INVALID_ARGUMENT,
         "vocabulary"),
        # adaptive λ (#11): its values are checked, and it needs validation rows to compare the models on
        (request(inputs, config={"adaptive": common_pb2.AdaptiveKD(gap_onset=0.1, gap_saturation=0.05)},
                 validation=common_pb2.DatasetRef(name="ctr/valid")), grpc.StatusCode.INVALID_ARGUMENT,
         "config.adaptive"),
        (request(inputs, config={"adaptive": common_pb2.AdaptiveKD(offline_valid_rows=0)},
                 validation=common_pb2.DatasetRef(name="ctr/valid")), grpc.StatusCode.INVALID_ARGUMENT,
         "config.adaptive.offline_valid_rows"),
        (request(inputs, config={"adaptive": common_pb2.AdaptiveKD()}), grpc.StatusCode.INVALID_ARGUMENT,
         "validation"),
    ]
    write_dataset(distiller_stores.datasets, "ctr/other-vocab", tiny_clicks(50), vocab_hash="0" * 64)
    listed = operations_pb2.ListOperationsRequest(kind="distillation", limit=1000)
    before = len(platform.operations(SERVICE).ListOperations(listed, timeout=10).operations)
    for req, code, where in cases:
        with pytest.raises(grpc.RpcError) as error:
            start(platform, req)
        assert error.value.code() == code, (where, error.value.details())
        assert where in error.value.details(), (where, error.value.details())
    after = len(platform.operations(SERVICE).ListOperations(listed, timeout=10).operations)
    assert after == before  # nothing was recorded, no worker ran


# ---- helpers --------------------------------------------------------------------------------------
def wait_until(predicate, timeout: float = 60.0) -> None:  # noqa: ANN001
    from services.local.stack import wait_for

    wait_for(predicate, timeout, "condition", interval=0.1)


def wait_for_details(platform: HookedPlatform, operation_id: str, key: str) -> dict:
    result: dict = {}

    def present() -> bool:
        found = details(get_operation(platform, SERVICE, operation_id))
        result.update(found)
        return key in found

    wait_until(present)
    return result


def reference_run(stores: Stores, platform: HookedPlatform, operation_id: str):  # noqa: ANN201
    """Run the operation's plan again in this process, uninterrupted, and return the trained student."""
    from services.offline_distiller import pipeline
    from services.offline_distiller.context import DistillerContext
    from services.offline_distiller.plan import DistillationPlan

    operations = open_operation_store(platform_settings(platform))
    plan = DistillationPlan.model_validate(operations.get(operation_id).params["plan"])
    plan = plan.model_copy(update={"operation_id": f"ref-{uuid.uuid4().hex[:8]}"})
    ctx = DistillerContext(checkpoints=stores.checkpoints, datasets=stores.datasets, operations=operations)
    inputs = pipeline.load_inputs(ctx, plan)
    _, result = pipeline.train(plan, inputs, None)
    return result.student
