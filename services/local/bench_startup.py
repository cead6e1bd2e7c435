"""Benchmark: starting the local platform (the five servers and one worker, embedded broker and store).

    python -m services.local.bench_startup [--repeats 3] [--json PATH]

Reports, per start, the seconds until every server answers its health check and the worker is up, and the
resident memory (MB) of each server and the worker once started. It is what `crossadapt up` and
`crossadapt switch --services local` pay before the first operation.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from crossadapt.bench.common import run_metadata
from services.local.bench_switch import BACKEND
from services.local.stack import LocalPlatform


def resident_mb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024
    return 0


def one_start() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="crossadapt-bench-startup-") as tmp:
        platform = LocalPlatform.embedded(Path(tmp) / "stack")
        with platform:
            began = time.perf_counter()
            platform.start(workers=("w1",), servers=BACKEND)
            seconds = time.perf_counter() - began
            return {"startup_s": round(seconds, 2),
                    "server_rss_mb": {name: resident_mb(proc.pid) for name, proc in platform.servers.items()},
                    "worker_rss_mb": {name: resident_mb(proc.pid) for name, proc in platform.workers.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="Also write the result here.")
    args = parser.parse_args()
    result = {"starts": [one_start() for _ in range(args.repeats)], **run_metadata()}
    text = json.dumps(result)
    if args.json is not None:
        args.json.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
