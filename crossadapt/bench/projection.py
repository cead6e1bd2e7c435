"""Benchmark of ``project_table`` on a large table: wall time and peak memory, each case in a fresh subprocess.

Memory is read without psutil: the baseline is the process's current RSS (``/proc/self/statm``) once the input table
exists, the peak is ``ru_maxrss`` from ``resource.getrusage`` (``bench.common.peak_rss_mb``) after projecting. Their
difference is what the projection itself needed (output, buffers, any hidden copy); the input is the caller's and is
reported apart. A fresh process keeps earlier work out of the high-water mark.

Run ``python -m crossadapt.bench.projection`` for the two standard cases (10M×16 → 32 expansion, 10M×32 → 16 PCA).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from typing import Any

from crossadapt.bench.common import peak_rss_mb, run_metadata

_MB = 1024 * 1024


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / _MB
    except OSError:  # no procfs: fall back to the high-water mark (overstates the baseline, understates growth)
        return peak_rss_mb()


def _reset_peak_rss() -> bool:
    """Resets the kernel's high-water mark (VmHWM) so earlier transients (imports, the input's draw) don't count."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return True
    except OSError:
        return False


def _peak_rss_since_reset_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return peak_rss_mb()


def _measure(rows: int, d_in: int, d_out: int, chunk_rows: int, seed: int) -> dict[str, Any]:
    """Runs inside the fresh subprocess."""
    import numpy as np

    from crossadapt.transfer.projection import project_table

    rng = np.random.default_rng(seed)
    table = rng.standard_normal((rows, d_in), dtype=np.float32)  # drawn in float32: no float64 temporary
    table *= (1.0 / np.arange(1, d_in + 1, dtype=np.float32)) ** 0.5  # a decaying spectrum, as embeddings have
    project_table(table[:1024], d_out, seed)  # warm up BLAS threads and imports outside the timed region
    baseline_mb = _current_rss_mb()
    peak_was_reset = _reset_peak_rss()
    start, cpu_start = time.perf_counter(), time.process_time()
    projected, report = project_table(table, d_out, seed, chunk_rows=chunk_rows)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    peak_mb = _peak_rss_since_reset_mb() if peak_was_reset else peak_rss_mb()
    peak_growth_mb = max(peak_mb - baseline_mb, 0.0)
    output_mb = projected.nbytes / _MB
    return {
        "rows": rows, "d_in": d_in, "d_out": d_out, "kind": report.kind, "chunk_rows": chunk_rows,
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3), "rows_per_s": round(rows / seconds),
        "peak_rss_mb": round(peak_growth_mb, 1), "output_mb": round(output_mb, 1),
        "ratio": round(peak_growth_mb / output_mb, 3), "input_mb": round(table.nbytes / _MB, 1),
        "explained_variance_ratio": report.explained_variance_ratio, **run_metadata(),
    }


def run_projection_bench(rows: int = 10_000_000, d_in: int = 16, d_out: int = 32, *, chunk_rows: int = 65_536,
                         seed: int = 0) -> dict[str, Any]:
    """Project a random [rows, d_in] float32 table to d_out in a fresh Python process; returns its figures.

    Keys: seconds (wall), cpu_seconds (all threads; steadier than wall on a shared machine), rows_per_s,
    peak_rss_mb (RSS growth over the baseline with the input loaded), output_mb, ratio (peak_rss_mb / output_mb),
    input_mb, kind, explained_variance_ratio, and the run's versions and threads.
    """
    arguments = json.dumps({"rows": rows, "d_in": d_in, "d_out": d_out, "chunk_rows": chunk_rows, "seed": seed})
    completed = subprocess.run([sys.executable, "-m", "crossadapt.bench.projection", "--worker", arguments],
                               capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"projection benchmark subprocess failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(_measure(**json.loads(sys.argv[2]))))
        return
    for d_in, d_out in ((16, 32), (32, 16)):
        print(json.dumps(run_projection_bench(d_in=d_in, d_out=d_out)))


if __name__ == "__main__":
    main()
