"""Data-parallel distillation over local processes with torch.distributed (DDP; gloo on CPU, nccl on GPU).

The task's own process is rank 0: it keeps the callback (progress, cancel, checkpoints) and starts
ranks 1..W-1 as subprocesses (`python -m services.offline_distiller.ddp JOB RANK WORLD INIT`) that
build the same run from a job folder (rows, weights, resumed state, plan) and join the process group
on 127.0.0.1. The core loop (`ProgressiveDistillation(distributed=True)`) gives each rank its share
of every global batch and lets DistributedDataParallel average the gradients: no home-made exchange.
Adaptive λ: rank 0 measures the student on the validation rows and broadcasts the figure (the core's
distributed mode), so every rank's controller takes the same λ at the same step; at the end rank 0 checks
each rank's controller is its own (`check_ranks_agree`) before the run is published.

On a GPU worker each rank takes one GPU (nccl), so `world_size` is at most the GPUs it has; on CPU
the ranks share the cores (gloo). A rank dies with its parent: it watches its parent process and
exits when it is gone (a killed task leaves no rank behind). Ranks on several machines would need a
rendezvous (torchrun / a PyTorchJob); one worker's processes are what this module runs.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import fields
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from crossadapt.data.arrays import SplitArrays
from crossadapt.models import build_model, parse_model_config
from crossadapt.training.runtime import available_cpus
from crossadapt.transfer.offline.distillation import OfflineDistillResult, ProgressiveDistillation
from services.common.errors import FailedPreconditionError, InternalError
from services.offline_distiller.training_run import DistillationInputs, build_run
from services.offline_distiller.plan import DistillationPlan

log = logging.getLogger(__name__)
_PARENT_POLL_S = 1.0


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def backend_and_devices(world_size: int) -> tuple[str, list[str]]:
    """nccl with one GPU per rank where the worker has GPUs, else gloo with CPU ranks."""
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if world_size > count:
            raise FailedPreconditionError(f"world_size {world_size} needs as many GPUs; this worker has {count}",
                                          field="config.world_size")
        return "nccl", [f"cuda:{rank}" for rank in range(world_size)]
    return "gloo", ["cpu"] * world_size


def _save_arrays(path: Path, arrays: SplitArrays) -> None:
    np.savez(path, **{f.name: getattr(arrays, f.name) for f in fields(arrays) if getattr(arrays, f.name) is not None})


def _load_arrays(path: Path) -> SplitArrays:
    with np.load(path) as data:
        return SplitArrays(**{name: data[name] for name in data.files})


def write_job(folder: Path, plan: DistillationPlan, inputs: DistillationInputs) -> None:
    """What the other ranks need to build the same run: rows, weights, resumed state, plan."""
    (folder / "plan.json").write_text(plan.model_dump_json())
    _save_arrays(folder / "train.npz", inputs.train)
    if inputs.valid is not None:
        _save_arrays(folder / "valid.npz", inputs.valid)
    torch.save(inputs.student.state_dict(), folder / "student.pt")
    if inputs.state is not None:
        torch.save(inputs.state, folder / "state.pt")


def read_job(folder: Path) -> tuple[DistillationPlan, DistillationInputs]:
    plan = DistillationPlan.model_validate_json((folder / "plan.json").read_text())
    student = build_model(parse_model_config(plan.model), plan.feature_spec)
    student.load_state_dict(torch.load(folder / "student.pt", weights_only=True))
    state = torch.load(folder / "state.pt", weights_only=True) if (folder / "state.pt").exists() else None
    valid = _load_arrays(folder / "valid.npz") if (folder / "valid.npz").exists() else None
    return plan, DistillationInputs(train=_load_arrays(folder / "train.npz"), valid=valid, student=student, state=state)


def _threads(world_size: int) -> int:
    return max(1, available_cpus() // world_size)


def _join(backend: str, device: str, init_method: str, rank: int, world_size: int, timeout_s: float) -> None:
    if backend == "nccl":
        torch.cuda.set_device(device)
    dist.init_process_group(backend, init_method=init_method, rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))


def train_data_parallel(plan: DistillationPlan, inputs: DistillationInputs, callback: Callable[..., None] | None,
                        *, timeout_s: float | None = None) -> tuple[ProgressiveDistillation, OfflineDistillResult]:
    """Run the distillation on `plan.settings.world_size` processes; this one is rank 0 (it runs `callback`)."""
    if timeout_s is None:
        from services.common.task_steps import training_settings

        timeout_s = training_settings().ddp_timeout_s
    world = plan.settings.world_size
    backend, devices = backend_and_devices(world)
    init_method = f"tcp://127.0.0.1:{_free_port()}"
    with tempfile.TemporaryDirectory(prefix="crossadapt-ddp-") as tmp:
        job = Path(tmp)
        write_job(job, plan, inputs)
        ranks = [_spawn(job, rank, world, init_method, timeout_s) for rank in range(1, world)]
        try:
            _join(backend, devices[0], init_method, 0, world, timeout_s)
            run = build_run(plan, inputs, device=devices[0], num_threads=_threads(world), distributed=True)
            try:
                result = run.run(callback)
            except RuntimeError as exc:  # a collective failed: name the rank that died, if one did
                raise _rank_failure(ranks, job) or exc
            for rank, proc in enumerate(ranks, start=1):
                code = proc.wait(timeout=timeout_s)
                if code != 0:
                    raise InternalError(f"data-parallel rank {rank} exited with {code}: {_tail(job, rank)}",
                                        field="config.world_size")
            check_ranks_agree(run.state_dict().get("adaptive"),
                              [_read_adaptive(job, rank) for rank in range(1, world)])
            return run, result
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()
            for proc in ranks:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)


def _adaptive_path(job: Path, rank: int) -> Path:
    return job / f"rank-{rank}-adaptive.pt"


def _read_adaptive(job: Path, rank: int) -> dict[str, Any] | None:
    path = _adaptive_path(job, rank)
    return torch.load(path, weights_only=True) if path.exists() else None


def check_ranks_agree(mine: dict[str, Any] | None, others: list[dict[str, Any] | None]) -> None:
    """Adaptive λ: every rank's controller (its λ trace, EMAs and λ) must be rank 0's, the one the checkpoints
    and the manifest hold. A rank that took another λ at some step trained on another loss, and DDP averaged
    the two gradients: a run that is no run's, so it fails here rather than publish it."""
    if mine is None:
        return
    for rank, theirs in enumerate(others, start=1):
        if theirs != mine:
            trace = (theirs or {}).get("trace")
            raise InternalError(f"data-parallel rank {rank}'s adaptive λ differs from rank 0's: "
                                f"rank 0 {mine['trace']}, rank {rank} {trace}", field="config.adaptive")


def _spawn(job: Path, rank: int, world: int, init_method: str, timeout_s: float) -> subprocess.Popen:
    log_file = open(job / f"rank-{rank}.log", "wb")  # noqa: SIM115 - lives as long as the process
    args = [sys.executable, "-m", "services.offline_distiller.ddp", str(job), str(rank), str(world), init_method,
            str(timeout_s)]
    return subprocess.Popen(args, stdout=log_file, stderr=subprocess.STDOUT)


def _tail(job: Path, rank: int, lines: int = 15) -> str:
    path = job / f"rank-{rank}.log"
    return " | ".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"


def _rank_failure(ranks: list[subprocess.Popen], job: Path) -> InternalError | None:
    time.sleep(0.5)  # let a dying rank's exit code land
    for rank, proc in enumerate(ranks, start=1):
        code = proc.poll()
        if code not in (None, 0):
            return InternalError(f"data-parallel rank {rank} exited with {code}: {_tail(job, rank)}",
                                 field="config.world_size")
    return None


def _exit_with_parent() -> None:
    parent = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_S)
            if os.getppid() != parent:  # rank 0 is gone (killed): no rank may outlive it
                os._exit(3)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def rank_main(argv: list[str]) -> None:
    """A rank other than 0: build the same run from the job folder, train, leave the group."""
    job, rank, world, init_method, timeout_s = Path(argv[0]), int(argv[1]), int(argv[2]), argv[3], float(argv[4])
    _exit_with_parent()
    plan, inputs = read_job(job)
    backend, devices = backend_and_devices(world)
    _join(backend, devices[rank], init_method, rank, world, timeout_s)
    try:
        run = build_run(plan, inputs, device=devices[rank], num_threads=_threads(world), distributed=True)
        run.run()
        adaptive = run.state_dict().get("adaptive")
        if adaptive is not None:  # rank 0 checks it is its own (check_ranks_agree)
            torch.save(adaptive, _adaptive_path(job, rank))
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    rank_main(sys.argv[1:])
