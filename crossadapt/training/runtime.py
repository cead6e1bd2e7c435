"""Process-wide runtime settings for training: CPU threads and seeds."""

from __future__ import annotations

import math
import os
import random

import numpy as np
import torch


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2/v1 CPU quota if any."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        count = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    if quota is not None:
        count = min(count, max(1, math.ceil(quota)))
    return max(1, count)


def _cgroup_cpu_quota() -> float | None:
    try:
        with open("/sys/fs/cgroup/cpu.max") as fh:  # cgroup v2: "<quota> <period>" or "max <period>"
            quota, period = fh.read().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        with open("/sys/fs/cgroup/cpu/cpu.cfs_quota_us") as q, open("/sys/fs/cgroup/cpu/cpu.cfs_period_us") as p:
            quota_us, period_us = int(q.read()), int(p.read())
            return None if quota_us <= 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def configure_threads(num_threads: int | None = None) -> int:
    """Set torch's intra-op threads; returns the count in effect.

    None means ``$CROSSADAPT_NUM_THREADS`` if set, else every available CPU. The variable exists because
    on some small VMs (the 2-vCPU CI box among them) a second thread adds no matmul throughput while
    OpenMP's barriers make small kernels several times slower; ``crossadapt bench train --threads``
    shows which count wins on a given machine.
    """
    wanted = num_threads or int(os.environ.get("CROSSADAPT_NUM_THREADS", "0") or 0) or available_cpus()
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)
    return torch.get_num_threads()


def seed_everything(seed: int) -> None:
    """Seed Python, numpy's legacy global RNG and torch (CPU and CUDA)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
