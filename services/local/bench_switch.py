"""Benchmark: the switch in process, through `--services local` (embedded), and through services on Redis + S3.

    crossadapt bench switch-platform [--config configs/demo.yaml] [--rounds 3] [--json]

The modes share the data and the teacher: a first in-process run generates and trains them, and every
timed run reads them from there (a derived config with `data.dir` and `teacher.checkpoint`), so what
differs is only how the CrossAdapt stages run. A shared 2-vCPU machine moves one in-process run by ±15%
from one minute to the next, so `--rounds N` runs the modes N times, in an order rotated every round,
and takes each platform run's ratio to the same round's in-process run. Reported per mode (`modes`:
medians over the rounds, each ratio's `[min, max]` in `*_ratio_range`; `per_round`: every run):

* `wall_s`: the whole `crossadapt switch` command (process start, data open, stages, scoring,
  baselines, report), `stages_s`: the CrossAdapt stages (the student's "train s"; for the platform the
  time from the first Start to the last operation's end, upload excluded), `upload_s` (platform:
  teacher and splits into the store), `startup_s` (`local`: starting servers and workers beyond what
  the data work hides; Redis + S3: the stack's start, once, as it stays up between rounds), the
  student's test AUC, and each mode's ratio to in-process; on Redis + S3 also the object store's CPU
  seconds during the switch (`store_cpu_s`: it shares the cores with the stages) and the MB it wrote
  (`store_mb_written`).

Redis + S3 starts redis-server and SeaweedFS on loopback, the five services and one worker, then
runs the switch against their addresses, as a client of a deployed platform would.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from crossadapt.bench.common import run_metadata

CLI = [sys.executable, "-c", "from crossadapt.cli import main; main()"]
BACKEND = ("projector", "sampler", "drift-detector", "offline-distiller", "online-codistiller")


def _switch(config: Path, out: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    result = subprocess.run([*CLI, "switch", "--config", str(config), "--out", str(out), *extra],
                            capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise RuntimeError(f"switch {' '.join(extra) or 'in process'} failed:\n{result.stderr[-3000:]}")
    results = json.loads((out / "results.json").read_text())
    stages = results["student"]["train_seconds"]
    upload = results["stage_seconds"].get("upload", 0.0)
    return {"wall_s": round(wall, 2), "stages_s": round(stages, 2), "upload_s": round(upload, 2),
            "student_auc": round(100 * results["student"]["auc"], 3),
            "operations": {op["service"]: op["seconds"] for op in results.get("operations", [])}}


def _derived_config(config: Path, work: Path, name: str, **overrides: Any) -> Path:
    """`config` with top-level `overrides`, written as `work/<name>.yaml`."""
    derived = work / f"{name}.yaml"
    derived.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), **overrides}))
    return derived


def _cached_config(config: Path, first_run: Path, work: Path) -> Path:
    """The config with the first run's data and teacher, so the timed runs only differ in the stages."""
    data_dirs = [p for p in (first_run / "data").iterdir() if p.is_dir()]
    return _derived_config(config, work, "cached", data={"dir": str(data_dirs[0])},
                           teacher={"checkpoint": str(first_run / "teacher")},
                           baselines=[])  # the same in every mode; not what this benchmark measures


def run_switch_bench(config: Path, *, redis_s3: bool = True, rounds: int = 1,
                     workdir: Path | None = None) -> dict[str, Any]:
    """`rounds` rounds of the modes, their order rotated from round to round; ratios are per round
    (each platform run over the same round's in-process run), then summarised by their median and range."""
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    with tempfile.TemporaryDirectory(prefix="crossadapt-bench-switch-", dir=workdir) as tmp:
        work = Path(tmp)
        # data and teacher, not timed (nor are the baselines needed there)
        _switch(_derived_config(config, work, "prepare", baselines=[]), work / "prepare")
        cached = _cached_config(config, work / "prepare", work)
        runs: dict[str, Callable[[Path], dict[str, Any]]] = {
            "in_process": lambda out: _switch(cached, out),
            "services_local": lambda out: _switch(cached, out, "--services", "local"),
        }
        with ExitStack() as stack:
            if redis_s3:
                runs["services_redis_s3"] = _redis_s3_runner(cached, work, stack)
            names = list(runs)
            per_round = []
            for index in range(rounds):
                order = names[index % len(names):] + names[:index % len(names)]
                per_round.append({name: runs[name](work / f"{name}-{index}") for name in order})
    for measured in per_round:
        base = measured["in_process"]
        for mode in measured.values():
            mode["wall_ratio"] = round(mode["wall_s"] / base["wall_s"], 3)
            mode["stages_ratio"] = round(mode["stages_s"] / base["stages_s"], 3)
        local = measured["services_local"]
        # What the local run spent outside the stages beyond what in-process spends there: mostly the stack's start.
        local["startup_s"] = round(local["wall_s"] - local["stages_s"] - local["upload_s"] - base["wall_s"]
                                   + base["stages_s"], 2)
    modes = {name: _summary([measured[name] for measured in per_round]) for name in per_round[0]}
    return {"config": str(config), "rounds": len(per_round), "modes": modes, "per_round": per_round,
            "cores": os.cpu_count(), "load_avg": os.getloadavg(), **run_metadata()}


def _redis_s3_runner(cached: Path, work: Path, stack: ExitStack) -> Callable[[Path], dict[str, Any]]:
    """Start redis-server, SeaweedFS, the five services and a worker (once, stopped by `stack`); return a run
    of the switch against their addresses, as a client of a deployed platform would."""
    from services.local.stack import LocalPlatform, RedisServer, SeaweedS3

    redis = RedisServer.start(_mkdir(work / "redis"))
    stack.callback(redis.stop)
    s3 = SeaweedS3.start(_mkdir(work / "s3"))
    stack.callback(s3.stop)
    platform = stack.enter_context(LocalPlatform.redis_s3(work / "stack", redis, s3))
    begun = time.perf_counter()
    platform.start(workers=("w1",), servers=BACKEND)
    startup = time.perf_counter() - begun
    addresses = ",".join(f"{name}={platform.address(name)}" for name in BACKEND)

    def run(out: Path) -> dict[str, Any]:
        cpu, written = _cpu_seconds(s3.proc.pid), _bytes_under(work / "s3" / "data")
        mode = _switch(cached, out, "--services", addresses, env={**platform.env})
        mode["startup_s"] = round(startup, 2)  # the stack's, once: it stays up between rounds
        mode["store_cpu_s"] = round(_cpu_seconds(s3.proc.pid) - cpu, 2)
        mode["store_mb_written"] = round((_bytes_under(work / "s3" / "data") - written) / 2**20, 1)
        return mode

    return run


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A mode over the rounds: each number's median, and each ratio's range as [min, max]."""
    numbers = [key for key, value in runs[0].items() if isinstance(value, int | float)]
    summary: dict[str, Any] = {key: round(statistics.median(run[key] for run in runs), 3) for key in numbers}
    for key in ("wall_ratio", "stages_ratio"):
        summary[f"{key}_range"] = [min(run[key] for run in runs), max(run[key] for run in runs)]
    summary["operations"] = runs[-1]["operations"]
    return summary


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _bytes_under(folder: Path) -> int:
    """Bytes of the files under `folder`: SeaweedFS appends to its volume files, so growth is what was written."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
