"""Shared benchmark utilities: peak memory, the machine's matrix-multiply rate, run metadata."""

from __future__ import annotations

import platform
import resource
import sys
import time
from typing import Any

import torch

_MB = 1024 * 1024


def peak_rss_mb() -> float:
    """The process's peak resident memory so far (MiB), from ``getrusage``."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak if sys.platform == "darwin" else peak * 1024) / _MB  # Linux reports KiB, macOS bytes


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(size: int = 2048, repeats: int = 5, device: str | torch.device = "cpu") -> float:
    """Best-of-``repeats`` fp32 ``torch.mm`` rate (GFLOP/s) of two ``[size, size]`` matrices.

    2048 saturates a few CPU cores (17 GFLOP per product); on a GPU pass a larger ``size``.
    Best-of rather than mean: the figure is the machine's capability, and other processes only slow it.
    """
    dev = torch.device(device)
    gen = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(dev)
    b = torch.randn(size, size, generator=gen).to(dev)
    torch.mm(a, b)  # warm-up: thread pool, kernel selection
    synchronize(dev)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        synchronize(dev)
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def run_metadata() -> dict[str, Any]:
    """Versions and threads, so figures from different machines are not compared blindly."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"torch": torch.__version__, "num_threads": torch.get_num_threads(), "cpu": cpu,
            "python": platform.python_version()}
