"""Fixtures of the platform tests: real redis-server and SeaweedFS (session), real workers and servers.

Two stacks run the same projection flow:
* `redis_s3_stack`: Redis broker/results/operations + SeaweedFS S3 store, 2 workers, 1 gRPC server.
* `embedded_stack`: nothing but files (filesystem:// broker, file:// results, local store).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from platform_stack import SLOW_CHUNKS, SLOW_ENV, RedisServer, SeaweedS3, Stack, s3_store  # noqa: F401
from services.common.storage import LocalObjectStore, ObjectStore

TABLE_ROWS = 1_000_000
TABLE_DIM = 16


@pytest.fixture(params=["local", "s3"])
def object_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """Each storage test runs on both backends: a local folder and SeaweedFS (a fresh prefix per test)."""
    if request.param == "local":
        return LocalObjectStore(tmp_path / "store")
    seaweed = request.getfixturevalue("seaweed")
    return s3_store(seaweed, f"unit-{uuid.uuid4().hex[:12]}", part_size=5 * 1024 * 1024)


@pytest.fixture(scope="session")
def teacher_table() -> np.ndarray:
    """[1M, 16] float32 with a clear spectrum (distinct PCA directions) and a non-zero mean."""
    rng = np.random.default_rng(20260101)
    scales = np.geomspace(3.0, 0.05, TABLE_DIM)
    return (rng.standard_normal((TABLE_ROWS, TABLE_DIM)) * scales + 0.25).astype(np.float32)




def _run_stack(stack: Stack, names: tuple[str, ...]) -> Iterator[Stack]:
    stack.extra_env.update(SLOW_ENV)
    try:
        stack.start(workers=names, server=True, queue_names=("projector",))
        yield stack
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def redis_s3_stack(redis_server: RedisServer, seaweed: SeaweedS3, tmp_path_factory: pytest.TempPathFactory,
                   ) -> Iterator[Stack]:
    # A worker killed outright: its task comes back after 10 s (tasks here take < 2 s).
    stack = Stack.redis_s3(tmp_path_factory.mktemp("redis-s3-stack"), redis_server, seaweed,
                           visibility_timeout_s="10", **SLOW_CHUNKS)
    yield from _run_stack(stack, ("w1", "w2"))


@pytest.fixture(scope="module")
def embedded_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    yield from _run_stack(Stack.embedded(tmp_path_factory.mktemp("embedded-stack"), **SLOW_CHUNKS), ("e1", "e2"))
