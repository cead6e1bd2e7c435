"""Shared by the offline-distiller and online co-distiller tests: tiny data and models, store helpers,
one platform (real redis-server, SeaweedFS S3, gRPC servers and a Celery worker) and worker hooks.

Tiny data: ``user`` (30 ids), ``item`` (12 ids) and ``price``; clicks from a known logistic model, in
time order (``timestamp`` = row index), with a real vocabulary whose hash every dataset and checkpoint
carries. A growing stream (#16, `write_growing_stream`): partitions of that vocabulary (version 1), then
partitions of version 2 (``GROWN_VOCABULARY``: 6 new users, ids 30..35, 30% of those partitions' rows).

Worker hooks are injected from here, never shipped in production code: the worker is started with
this folder's generated ``sitecustomize.py`` on its PYTHONPATH, which, in each pool process
(``worker_process_init``), wraps ``offline_distiller.pipeline.Checkpointer.__call__`` (after every
step) and ``online_codistiller.pipeline.StreamRun.train_batch`` (every stream batch) to append what
they are about to do to ``<hooks>/<operation id>.log`` and to pause ``<hooks>/pause`` seconds, so a
test can slow a task down, kill it mid-way and count exactly which steps and rows ran in which process.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from crossadapt.data.arrays import SplitArrays
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.spec import CategoricalField, FeatureSpec
from services.common.settings import PlatformSettings
from services.common.storage import CheckpointStore, DatasetStore, open_object_store
from services.local.stack import LocalPlatform, RedisServer, SeaweedS3, wait_for

TINY_SPEC = FeatureSpec(
    categorical=(CategoricalField(name="user", vocab_size=30), CategoricalField(name="item", vocab_size=12)),
    numerical=("price",),
)
TINY_VOCABULARY = Vocabulary({"user": pa.array([f"u{i}" for i in range(1, 30)]),
                              "item": pa.array([f"i{i}" for i in range(1, 12)])})
VOCAB_HASH = TINY_VOCABULARY.hash
NEW_USERS = 6
GROWN_VOCABULARY = TINY_VOCABULARY.grow(
    {"user": (pa.array([f"new{i}" for i in range(NEW_USERS)]), np.full(NEW_USERS, 5))})
GROWN_SPEC = FeatureSpec(
    categorical=(CategoricalField(name="user", vocab_size=30 + NEW_USERS), TINY_SPEC.categorical[1]),
    numerical=TINY_SPEC.numerical)
EPOCH = datetime(2026, 3, 1, tzinfo=timezone.utc)
HOOKS_DIR = Path(__file__).resolve().parent


def tiny_clicks(n: int, seed: int = 0, first_timestamp: int = 0) -> SplitArrays:
    """``n`` time-ordered rows over TINY_SPEC (``prob``: the true click probability)."""
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(0, 30, n), rng.integers(0, 12, n)], 1).astype(np.int64)
    num = rng.standard_normal((n, 1)).astype(np.float32)
    z = 1.2 * np.sin(cat[:, 0]) - 0.8 * (cat[:, 1] % 3 == 0) + 0.6 * num[:, 0] - 0.5
    p = 1.0 / (1.0 + np.exp(-z))
    label = (rng.random(n) < p).astype(np.float32)
    return SplitArrays(categorical=cat, numerical=num, label=label,
                       timestamp=np.arange(first_timestamp, first_timestamp + n, dtype=np.int64),
                       prob=p.astype(np.float32))


def write_growing_stream(datasets: DatasetStore, name: str, *, old_rows: int, new_rows: int, new_partitions: int,
                         with_vocabulary: bool = True) -> list[str]:
    """A stream whose vocabulary grows: one partition of `old_rows` rows of version 1 (none if 0), then
    `new_partitions` partitions of `new_rows` rows in all of version 2, 30% of them of the new users.
    Each version's values are stored with the stream unless `with_vocabulary` is False. Returns the
    partition ids in time order."""
    from services.common.model_io import write_split

    written = []
    if old_rows:
        written += write_split(datasets, name, tiny_clicks(old_rows, seed=5), TINY_SPEC, vocab_hash=VOCAB_HASH,
                               vocab_version=1, start=EPOCH, vocabulary=TINY_VOCABULARY if with_vocabulary else None)
    new = tiny_clicks(new_rows, seed=6, first_timestamp=old_rows)
    rng = np.random.default_rng(0)
    newcomers = rng.random(len(new)) < 0.3
    new.categorical[newcomers, 0] = rng.integers(30, 30 + NEW_USERS, int(newcomers.sum()))
    written += write_split(datasets, name, new, GROWN_SPEC, vocab_hash=GROWN_VOCABULARY.hash, vocab_version=2,
                           partitions=new_partitions, start=EPOCH.replace(hour=1),
                           vocabulary=GROWN_VOCABULARY if with_vocabulary else None)
    return written


def tiny_model(dim: int = 4, seed: int = 0, arch: str = "mlp", hidden: tuple[int, ...] = (8,),
               spec: FeatureSpec = TINY_SPEC, dropout: float = 0.0):
    torch.manual_seed(seed)
    config = parse_model_config({"architecture": arch, "embedding_dim": dim, "hidden_units": list(hidden),
                                 "embedding_init_std": 0.05, "dropout": dropout})
    return build_model(config, spec)


# ---- stores ---------------------------------------------------------------------------------------
def platform_settings(platform: LocalPlatform) -> PlatformSettings:
    """The platform's PlatformSettings (its env also carries CROSSADAPT_TRAINING_* for the tasks)."""
    return PlatformSettings(**{k: v for k, v in platform.env_settings.items() if k in PlatformSettings.model_fields})


@dataclass
class Stores:
    checkpoints: CheckpointStore
    datasets: DatasetStore

    @classmethod
    def of(cls, settings: PlatformSettings) -> Stores:
        objects = open_object_store(settings)
        return cls(CheckpointStore(objects), DatasetStore(objects))


def write_dataset(datasets: DatasetStore, name: str, arrays: SplitArrays, *, partitions: int = 1,
                  spec: FeatureSpec = TINY_SPEC, vocab_hash: str = VOCAB_HASH, start: datetime = EPOCH) -> list[str]:
    from services.common.model_io import write_split

    return write_split(datasets, name, arrays, spec, vocab_hash=vocab_hash, partitions=partitions, start=start)


def publish_teacher(checkpoints: CheckpointStore, name: str, *, seed: int = 1, train_rows: int = 3000, dim: int = 4):
    """A briefly trained MLP teacher with the tiny vocabulary, as production would have it."""
    from crossadapt.training import TrainConfig, Trainer
    from services.common.model_io import publish_model

    teacher = tiny_model(dim, seed=seed)
    Trainer(teacher, TrainConfig(epochs=1, batch_size=256, progress=False, patience=None, restore_best=False,
                                 num_threads=1)).fit(tiny_clicks(train_rows, seed=seed + 100))
    return publish_model(checkpoints, name, teacher, feature_spec=TINY_SPEC, vocab_hash=VOCAB_HASH,
                         vocabulary=TINY_VOCABULARY, extra={"role": "teacher"})


def project(checkpoints: CheckpointStore, operations, teacher, student_name: str, width: int, seed: int = 7):  # noqa: ANN001, ANN201
    """The projector's own pipeline, run in this process: the teacher's tables projected to `width`."""
    from services.projector import pipeline as projector

    operation_id = f"proj-{uuid.uuid4().hex[:12]}"
    plan = projector.plan_projection(checkpoints, operation_id=operation_id, teacher_name=teacher.name,
                                     teacher_version=teacher.version, student_name=student_name, width=width,
                                     seed=seed, fields=[])
    plan = plan.model_copy(update={"student_version": checkpoints.claim_version(student_name, owner=operation_id)})
    ctx = projector.ProjectorContext(checkpoints=checkpoints, operations=operations)
    return projector.run_in_process(ctx, plan)


# ---- the platform -------------------------------------------------------------------------------
SITECUSTOMIZE = '''
import os
if os.environ.get("DISTILLER_TEST_HOOKS"):
    from celery.signals import worker_process_init

    @worker_process_init.connect(weak=False)
    def _install_distiller_test_hooks(**_):
        import sys
        sys.path.insert(0, {tests!r})
        import distiller_fixtures
        distiller_fixtures.install_worker_hooks(os.environ["DISTILLER_TEST_HOOKS"])
'''


def _pause(hooks: str) -> None:
    try:
        time.sleep(float(Path(hooks, "pause").read_text() or 0))
    except (FileNotFoundError, ValueError):
        pass


def _log(hooks: str, operation_id: str, line: str) -> None:
    with open(Path(hooks, f"{operation_id}.log"), "a") as out:
        out.write(line + "\n")
        out.flush()
        os.fsync(out.fileno())


def install_worker_hooks(hooks: str) -> None:
    """Runs in a worker pool process (see the module docstring)."""
    from services.offline_distiller.pipeline import Checkpointer
    from services.online_codistiller.pipeline import StreamRun

    step_callback, train_batch = Checkpointer.__call__, StreamRun.train_batch

    def logged_step(self, run, event):  # noqa: ANN001, ANN202
        _log(hooks, self.plan.operation_id, f"{os.getpid()} {event} {run.cursor.steps}")
        step_callback(self, run, event)
        _pause(hooks)

    def logged_batch(self, arrays, position, counts):  # noqa: ANN001, ANN202
        # One line per partition the batch drew rows from: pid, partition, first row, end row.
        before = self.position
        names = list(counts)
        for index, partition in enumerate(names):
            if index == len(names) - 1:
                start = position.row - counts[partition]
            else:
                start = before.row if index == 0 and before is not None and before.partition == partition else 0
            _log(hooks, self.plan.operation_id, f"{os.getpid()} {partition} {start} {start + counts[partition]}")
        train_batch(self, arrays, position, counts)
        _pause(hooks)

    Checkpointer.__call__ = logged_step
    StreamRun.train_batch = logged_batch


@dataclass
class HookedPlatform(LocalPlatform):
    """A LocalPlatform whose processes load the test hooks (see the module docstring)."""

    hooks: Path | None = None

    @property
    def env(self) -> dict[str, str]:
        env = super().env
        if self.hooks is not None:
            env["PYTHONPATH"] = os.pathsep.join(p for p in (str(self.hooks), env.get("PYTHONPATH", "")) if p)
            env["DISTILLER_TEST_HOOKS"] = str(self.hooks)
        return env

    def pause(self, seconds: float) -> None:
        (self.hooks / "pause").write_text(str(seconds))  # type: ignore[operator]

    def hook_log(self, operation_id: str) -> list[list[str]]:
        path = self.hooks / f"{operation_id}.log"  # type: ignore[operator]
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


@dataclass
class Shared:
    """One set of servers for every distiller test module of the session."""

    redis: RedisServer | None = None
    seaweed: SeaweedS3 | None = None
    platform: HookedPlatform | None = None
    stopped: bool = False


_SHARED = Shared()
QUEUES = ("offline-distiller", "online-codistiller")
TEST_SETTINGS = {
    # A whole worker killed: its task is back after ~6 s; a dead holder's lease is free after 4 s (8 missed
    # heartbeats: a live holder starved of CPU on a crowded machine keeps it).
    "visibility_timeout_s": "6", "training_lease_s": "4", "training_heartbeat_s": "0.5",
    "training_report_interval_s": "0.2", "training_follow_poll_s": "0.3", "watch_poll_s": "0.1",
    "task_retry_backoff_max_s": "2",
}


def shared_platform(tmp_path_factory: pytest.TempPathFactory) -> HookedPlatform:
    if _SHARED.platform is None:
        root = tmp_path_factory.mktemp("distillers")
        hooks = root / "hooks"
        hooks.mkdir()
        (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE.format(tests=str(HOOKS_DIR)))
        _SHARED.redis = RedisServer.start(root)
        _SHARED.seaweed = SeaweedS3.start(root)
        platform = HookedPlatform.redis_s3(root / "platform", _SHARED.redis, _SHARED.seaweed, **TEST_SETTINGS)
        platform.hooks = hooks
        # Two workers: a task whose whole worker is killed is redelivered to the other one.
        platform.start(workers=("w1", "w2"), servers=("offline-distiller", "online-codistiller"),
                       queue_names=QUEUES)
        _SHARED.platform = platform
    return _SHARED.platform


def stop_shared() -> None:
    if _SHARED.platform is not None and not _SHARED.stopped:
        _SHARED.stopped = True
        _SHARED.platform.stop()
        _SHARED.seaweed.stop()  # type: ignore[union-attr]
        _SHARED.redis.stop()  # type: ignore[union-attr]


@pytest.fixture(scope="session")
def distiller_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HookedPlatform]:
    platform = shared_platform(tmp_path_factory)
    yield platform
    stop_shared()


@pytest.fixture(scope="session")
def distiller_stores(distiller_platform: HookedPlatform) -> Stores:
    return Stores.of(platform_settings(distiller_platform))


# ---- operations over gRPC -----------------------------------------------------------------------
def get_operation(platform: LocalPlatform, service: str, operation_id: str):  # noqa: ANN201
    from services.common.proto import operations_pb2

    return platform.operations(service).GetOperation(
        operations_pb2.GetOperationRequest(operation_id=operation_id), timeout=10).operation


def cancel_operation(platform: LocalPlatform, service: str, operation_id: str):  # noqa: ANN201
    from services.common.proto import operations_pb2

    return platform.operations(service).CancelOperation(
        operations_pb2.CancelOperationRequest(operation_id=operation_id), timeout=10).operation


def watch_operation(platform: LocalPlatform, service: str, operation_id: str, timeout: float = 120.0) -> list:
    from services.common.proto import operations_pb2

    stream = platform.operations(service).WatchOperation(
        operations_pb2.WatchOperationRequest(operation_id=operation_id), timeout=timeout)
    return [reply.operation for reply in stream]


def wait_terminal(platform: LocalPlatform, service: str, operation_id: str, timeout: float = 120.0):  # noqa: ANN201
    from services.common.operation_api import TERMINAL_WIRE_STATES

    return wait_for(lambda: (op := get_operation(platform, service, operation_id)).state in TERMINAL_WIRE_STATES
                    and op, timeout, f"operation {operation_id}", interval=0.2)


def details(operation) -> dict:  # noqa: ANN001
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(operation.details) if operation.HasField("details") else {}


def spare_worker(platform: HookedPlatform) -> None:
    """At least two live workers, so one can take over a task whose worker is killed. Call it before
    starting the operation: a worker takes seconds to start, long enough for a short task to end."""
    if sum(proc.poll() is None for proc in platform.workers.values()) < 2:
        platform.start(workers=(f"w{uuid.uuid4().hex[:4]}",), queue_names=QUEUES)


def kill_task_worker(platform: HookedPlatform, service: str, operation_id: str) -> int:
    """kill -9 of the whole worker (process group) whose pool process runs the operation's task, once
    another worker is up to take the task over (Redis redelivers it after its visibility timeout).
    Returns how many batches/steps the hook log held just after the kill."""
    victim = worker_of(platform, int(details(get_operation(platform, service, operation_id))["worker"]["pid"]))
    spare_worker(platform)
    os.killpg(platform.workers[victim].pid, signal.SIGKILL)
    return len(platform.hook_log(operation_id))


def replayed_rows(log: list[list[str]], partitions: list[str], partition_rows: int) -> int:
    """From a co-distillation's hook log (pid, partition, first row, end row): fails naming any partition
    row never trained on; returns how many rows were trained on more than once, over all partitions."""
    replayed = 0
    for partition in partitions:
        covered = np.zeros(partition_rows, dtype=np.int64)
        for _, p, first, end in log:
            if p == partition:
                covered[int(first):int(end)] += 1
        assert covered.min() >= 1, f"rows of {partition} skipped: {np.flatnonzero(covered == 0)[:5]}"
        replayed += int(covered.sum() - partition_rows)
    return replayed


def reference_codistillation(stores: Stores, platform: HookedPlatform, operation_id: str):  # noqa: ANN201
    """The operation's plan run again, uninterrupted, in this process (under other output names): the
    final student and its teacher, as models."""
    from services.common.model_io import load_model
    from services.common.operations import open_operation_store
    from services.online_codistiller import pipeline
    from services.online_codistiller.context import CoDistillerContext
    from services.online_codistiller.plan import CoDistillationPlan

    operations = open_operation_store(platform_settings(platform))
    plan = CoDistillationPlan.model_validate(operations.get(operation_id).params["plan"])
    suffix = uuid.uuid4().hex[:8]
    plan = plan.model_copy(update={"operation_id": f"ref-{suffix}", "student_name": f"ref/student-{suffix}",
                                   "teacher_name": f"ref/teacher-{suffix}"})
    ctx = CoDistillerContext(checkpoints=stores.checkpoints, datasets=stores.datasets, operations=operations)
    student = pipeline.run_codistillation(ctx, plan, lambda *args, **kwargs: None)
    model, _ = load_model(stores.checkpoints, student.name, student.version)
    teacher, _ = load_model(stores.checkpoints, *student.manifest.extra["teacher"].rsplit("/", 1))
    return model, teacher


def kill_worker_process(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)


def worker_of(platform: LocalPlatform, pool_pid: int) -> str:
    """The name of the worker whose pool process `pool_pid` is."""
    parent = int(Path(f"/proc/{pool_pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return next(name for name, proc in platform.workers.items() if proc.pid == parent)
