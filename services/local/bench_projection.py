"""Benchmark: one table projected through the platform (gRPC → Celery chord over shards → store) vs. in process.

    python -m services.local.bench_projection                   # 10M × 16 → 32, 8 shards, 2 workers, embedded
    python -m services.local.bench_projection --backend redis-s3
    crossadapt bench platform --rows 10000000 --json

Both paths compute the same E·W on the same machine. The platform path also reads every teacher
shard from the store and checks its sha256, writes and hashes every student shard, and publishes
a manifest; the ratio `platform_s / in_process_s` is that overhead. Uploading the teacher is
timed apart (`upload_s`): it happens once per teacher, not per projection. Starting the
processes is not timed. The platform (services, gRPC) is imported inside the function only.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from crossadapt.bench.common import run_metadata

Backend = Literal["embedded", "redis-s3"]


def _teacher(rows: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((rows, dim), dtype=np.float32) * np.geomspace(2.0, 0.1, dim, dtype=np.float32)


def run_platform_bench(  # noqa: PLR0913 - the benchmark's knobs
    rows: int = 10_000_000,
    dim: int = 16,
    width: int = 32,
    shards: int = 8,
    workers: int = 2,
    backend: Backend = "embedded",
    seed: int = 0,
    workdir: Path | None = None,
) -> dict[str, Any]:
    """Wall times of the platform and in-process projections of one [rows, dim] table to `width`."""
    from crossadapt.transfer import project_table
    from services.local.stack import LocalPlatform, RedisServer, SeaweedS3, wait_for
    from services.common.proto import common_pb2, operations_pb2, projector_pb2
    from services.common.storage import CheckpointStore, open_object_store
    from services.common.storage.tables import read_table, upload_table_checkpoint

    table = _teacher(rows, dim, seed)
    start = time.perf_counter()
    expected, report = project_table(table, width, seed=seed)
    in_process_s = time.perf_counter() - start

    with tempfile.TemporaryDirectory(prefix="crossadapt-bench-", dir=workdir) as tmp:
        base = Path(tmp)
        servers: list[Any] = []
        try:
            if backend == "redis-s3":
                servers = [RedisServer.start(_mkdir(base / "redis")), SeaweedS3.start(_mkdir(base / "s3"))]
                stack = LocalPlatform.redis_s3(base / "stack", servers[0], servers[1])
            else:
                stack = LocalPlatform.embedded(base / "stack")
            with stack:
                store = CheckpointStore(open_object_store(stack.settings()))
                start = time.perf_counter()
                upload_table_checkpoint(store, "bench/teacher", {"table": table}, num_shards=shards)
                upload_s = time.perf_counter() - start
                stack.start(workers=tuple(f"bench{index + 1}" for index in range(workers)), server=True)
                stub = stack.stub()
                start = time.perf_counter()
                operation = stub.StartProjection(projector_pb2.StartProjectionRequest(
                    teacher=common_pb2.CheckpointRef(name="bench/teacher"), student_name="bench/student",
                    width=width, seed=seed), timeout=60).operation
                final = None
                for reply in stack.operations().WatchOperation(operations_pb2.WatchOperationRequest(operation_id=operation.id)):
                    final = reply.operation
                platform_s = time.perf_counter() - start
                if final is None or final.state != common_pb2.OPERATION_STATE_SUCCEEDED:
                    raise RuntimeError(f"projection did not succeed: {final}")
                published = wait_for(lambda: store.resolve("bench/student"), 10, "published student")
                max_abs_diff = float(np.abs(read_table(store, published, "table") - expected).max())
        finally:
            for server in servers:
                server.stop()
    return {
        "backend": backend, "rows": rows, "dim": dim, "width": width, "kind": report.kind, "shards": shards,
        "workers": workers, "in_process_s": round(in_process_s, 3), "platform_s": round(platform_s, 3),
        "ratio": round(platform_s / in_process_s, 2), "upload_s": round(upload_s, 3),
        "max_abs_diff": max_abs_diff, "cores": os.cpu_count(), **run_metadata(),
    }


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--backend", choices=["embedded", "redis-s3"], default="embedded")
    args = parser.parse_args()
    print(json.dumps(run_platform_bench(args.rows, args.dim, args.width, args.shards, args.workers, args.backend)))


if __name__ == "__main__":
    main()
