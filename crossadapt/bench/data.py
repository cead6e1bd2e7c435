"""Data-layer benchmark: synthetic generation speed and Criteo-TSV preparation speed.

``python -m crossadapt.bench.data --rows 1000000 --repeats 2`` prints one JSON object per repeat.
The TSV is written from the ``criteo_like`` generator (not timed); ``prepare_dataset`` then runs in a
fresh process so its peak RSS is its own: read, vocabulary with the <UNK> threshold, log transform,
time split and write are all included.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import queue as queue_module
import resource
import tempfile
import time
from pathlib import Path

from crossadapt.data.prepare import prepare_dataset
from crossadapt.data.synthetic import generate_synthetic
from crossadapt.data.synthetic_config import synthetic_preset
from crossadapt.data.synthetic_export import write_criteo_tsv


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _timed_prepare(tsv: str, out: str, queue) -> None:
    started, cpu = time.perf_counter(), _cpu_seconds()
    prepare_dataset(tsv, out, source_format="criteo")
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    queue.put((seconds, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))


def run_data_bench(
    rows: int = 1_000_000, seed: int = 0, *, workdir: str | Path | None = None, isolate: bool = True
) -> dict:
    """Time synthetic generation and ``prepare_dataset`` on a Criteo-format TSV of ``rows`` rows.

    Returns ``{"rows", "seconds", "rows_per_s", "cpu_seconds", "peak_rss_mb", "synthetic_seconds",
    "synthetic_rows_per_s", "synthetic_cpu_seconds", "tsv_mb"}``; ``seconds`` (wall), ``rows_per_s``,
    ``cpu_seconds`` (all threads) and ``peak_rss_mb`` are for prepare. On a shared machine compare
    wall and CPU seconds: prepare uses two threads, so uncontended wall time is below CPU time.
    ``isolate=False`` runs prepare in this process (faster to start; the RSS is then this process's peak).
    """
    config = synthetic_preset("criteo_like", rows=rows, seed=seed)
    started, cpu = time.perf_counter(), _cpu_seconds()
    table = generate_synthetic(config)
    synthetic_seconds, synthetic_cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    with tempfile.TemporaryDirectory(dir=workdir, prefix="crossadapt-bench-") as tmp:
        tsv = Path(tmp) / "train.txt"
        write_criteo_tsv(table, tsv)
        del table
        args = (str(tsv), str(Path(tmp) / "prepared"))
        if isolate:  # a fresh process, so the peak RSS is prepare's own
            context = multiprocessing.get_context("spawn")
            queue = context.Queue()
            child = context.Process(target=_timed_prepare, args=(*args, queue))
            child.start()
            seconds, cpu_seconds, peak_rss_mb = queue.get()
            child.join()
        else:
            queue = queue_module.SimpleQueue()
            _timed_prepare(*args, queue)
            seconds, cpu_seconds, peak_rss_mb = queue.get()
        tsv_mb = tsv.stat().st_size / 2**20
    return {
        "rows": rows,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "cpu_seconds": round(cpu_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "synthetic_seconds": round(synthetic_seconds, 3),
        "synthetic_rows_per_s": round(rows / synthetic_seconds),
        "synthetic_cpu_seconds": round(synthetic_cpu, 3),
        "tsv_mb": round(tsv_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    for _ in range(args.repeats):
        print(json.dumps(run_data_bench(args.rows, args.seed)), flush=True)


if __name__ == "__main__":
    main()
