"""Data-layer benchmark: Criteo-TSV preparation speed and peak memory, at one size or several.

``python -m crossadapt.bench.data --sizes 1000000,3000000,10000000`` prints one JSON object with a row
per size (rows/s, CPU seconds, peak RSS) and the ratios between sizes; ``--rows N`` benchmarks one size.
The TSV is written from the ``criteo_like`` generator in pieces of 1M rows (not timed); smaller sizes
are prefixes of the largest file. Each ``prepare_dataset`` runs in a freshly spawned process, so its
peak RSS (that process's VmHWM, which, unlike ``ru_maxrss``, does not carry the parent's peak over
``exec``) is its own: read, vocabulary with the <UNK> threshold,
log transform and missing indicators, time split and write are all included. The machine's load
average is recorded before and after each run (the 2-core CI box is shared).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import queue as queue_module
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from crossadapt.data.prepare import prepare_dataset
from crossadapt.data.synthetic import generate_synthetic
from crossadapt.data.synthetic_config import synthetic_preset
from crossadapt.data.synthetic_export import write_criteo_tsv

PIECE_ROWS = 1_000_000
DEFAULT_SIZES = (1_000_000, 3_000_000, 10_000_000)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB): ``VmHWM`` where Linux has it. Unlike ``ru_maxrss`` it
    starts afresh at ``exec``, so a spawned child does not inherit its parent's peak."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _timed_prepare(tsv: str, out: str, queue, streaming: bool = True) -> None:
    started, cpu = time.perf_counter(), _cpu_seconds()
    prepare_dataset(tsv, out, source_format="criteo", streaming=streaming)
    seconds, cpu = time.perf_counter() - started, _cpu_seconds() - cpu
    queue.put((seconds, cpu, peak_rss_mb()))


def _prepare_in_child(tsv: Path, out: Path, streaming: bool) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of prepare in a fresh process."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_timed_prepare, args=(str(tsv), str(out), queue, streaming))
    child.start()
    try:
        result = queue.get()
    finally:
        child.join()
    if child.exitcode != 0:
        raise RuntimeError(f"prepare failed in the child process (exit code {child.exitcode})")
    return result


def write_criteo_file(path: Path, rows: int, seed: int = 0) -> float:
    """A Criteo-format TSV of ``rows`` criteo_like rows, generated 1M rows at a time; returns seconds."""
    started = time.perf_counter()
    with open(path, "wb") as out:
        for piece, start in enumerate(range(0, rows, PIECE_ROWS)):
            table = generate_synthetic(synthetic_preset("criteo_like", rows=min(PIECE_ROWS, rows - start), seed=seed * 1000 + piece))
            part = path.with_suffix(".part")
            write_criteo_tsv(table, part)
            del table
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
            part.unlink()
    return time.perf_counter() - started


def copy_prefix(source: Path, target: Path, lines: int) -> None:
    """The first ``lines`` lines of ``source``."""
    left = lines
    with open(source, "rb") as f, open(target, "wb") as out:
        while left:
            block = f.read(16 << 20)
            if not block:
                raise ValueError(f"{source} has fewer than {lines} lines")
            count = block.count(b"\n")
            if count >= left:
                cut = int(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == ord("\n"))[left - 1])
                out.write(block[: cut + 1])
                return
            out.write(block)
            left -= count


def run_data_bench(
    rows: int = 1_000_000, seed: int = 0, *, workdir: str | Path | None = None, isolate: bool = True, streaming: bool = True
) -> dict:
    """Time ``prepare_dataset`` on a Criteo-format TSV of ``rows`` rows (and the synthetic generation).

    Returns ``{"rows", "seconds", "rows_per_s", "cpu_seconds", "peak_rss_mb", "synthetic_seconds",
    "synthetic_rows_per_s", "tsv_mb", "streaming", "load_before", "load_after"}``; ``seconds`` (wall),
    ``rows_per_s``, ``cpu_seconds`` (all threads) and ``peak_rss_mb`` are for prepare. On a shared
    machine compare wall and CPU seconds: prepare uses two threads, so uncontended wall time is below
    CPU time. ``isolate=False`` runs prepare in this process (the RSS is then this process's peak).
    """
    with tempfile.TemporaryDirectory(dir=workdir, prefix="crossadapt-bench-") as tmp:
        tsv = Path(tmp) / "train.txt"
        synthetic_seconds = write_criteo_file(tsv, rows, seed)
        result = _measure(tsv, Path(tmp) / "prepared", rows, isolate=isolate, streaming=streaming)
    result["synthetic_seconds"] = round(synthetic_seconds, 3)
    result["synthetic_rows_per_s"] = round(rows / synthetic_seconds)
    return result


def _measure(tsv: Path, out: Path, rows: int, *, isolate: bool = True, streaming: bool = True) -> dict:
    load_before = os.getloadavg()[0]
    if isolate:
        seconds, cpu_seconds, peak_rss_mb = _prepare_in_child(tsv, out, streaming)
    else:
        queue = queue_module.SimpleQueue()
        _timed_prepare(str(tsv), str(out), queue, streaming)
        seconds, cpu_seconds, peak_rss_mb = queue.get()
    shutil.rmtree(out, ignore_errors=True)
    return {
        "rows": rows,
        "streaming": streaming,
        "seconds": round(seconds, 3),
        "rows_per_s": round(rows / seconds),
        "cpu_seconds": round(cpu_seconds, 3),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "tsv_mb": round(tsv.stat().st_size / 2**20, 1),
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def run_data_scaling(
    sizes: tuple[int, ...] = DEFAULT_SIZES, seed: int = 0, *, workdir: str | Path | None = None,
    in_memory_rows: int | None = 1_000_000,
) -> dict:  # fmt: skip
    """Streaming prepare at each size (one generated file, smaller sizes its prefixes), side by side.

    Returns ``{"runs": [per size, as run_data_bench], "in_memory": the old in-memory path at
    ``in_memory_rows`` (None: skipped), "ratios": {"<size>/<smallest>": {"rows", "peak_rss",
    "rows_per_s"}}, "cpus", "generate_seconds"}``. Peak RSS that does not grow with rows shows as a
    ``peak_rss`` ratio near 1 while ``rows`` grows 10x.
    """
    sizes = tuple(sorted(sizes))
    with tempfile.TemporaryDirectory(dir=workdir, prefix="crossadapt-bench-") as tmp:
        biggest = Path(tmp) / f"criteo_{sizes[-1]}.txt"
        generate_seconds = write_criteo_file(biggest, sizes[-1], seed)
        runs, in_memory = [], None
        for rows in sizes:
            tsv = biggest if rows == sizes[-1] else Path(tmp) / f"criteo_{rows}.txt"
            if tsv != biggest:
                copy_prefix(biggest, tsv, rows)
            runs.append(_measure(tsv, Path(tmp) / "prepared", rows))
            if in_memory_rows == rows:
                in_memory = _measure(tsv, Path(tmp) / "prepared", rows, streaming=False)
            if tsv != biggest:
                tsv.unlink()
    base = runs[0]
    ratios = {
        f"{run['rows']}/{base['rows']}": {
            "rows": round(run["rows"] / base["rows"], 2),
            "peak_rss": round(run["peak_rss_mb"] / base["peak_rss_mb"], 3),
            "rows_per_s": round(run["rows_per_s"] / base["rows_per_s"], 3),
        }
        for run in runs[1:]
    }
    return {"runs": runs, "in_memory": in_memory, "ratios": ratios, "cpus": os.cpu_count(),
            "generate_seconds": round(generate_seconds, 1)}  # fmt: skip


def format_scaling(result: dict) -> str:
    """The scaling result as a Markdown table (rows, rows/s, CPU s, peak RSS, load)."""
    lines = ["| rows | path | rows/s | wall s | CPU s | peak RSS MB | load before/after |", "|---:|---|---:|---:|---:|---:|---|"]
    runs = result["runs"] + ([result["in_memory"]] if result.get("in_memory") else [])
    for run in runs:
        path = "streaming" if run["streaming"] else "in-memory"
        lines.append(f"| {run['rows']:,} | {path} | {run['rows_per_s']:,} | {run['seconds']} | {run['cpu_seconds']} | "
                     f"{run['peak_rss_mb']:,.0f} | {run['load_before']}/{run['load_after']} |")  # fmt: skip
    for key, ratio in result["ratios"].items():
        lines.append(f"\n{key}: rows x{ratio['rows']}, peak RSS x{ratio['peak_rss']}, rows/s x{ratio['rows_per_s']}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None, help="One size (default: --sizes).")
    parser.add_argument("--sizes", default=",".join(map(str, DEFAULT_SIZES)), help="Comma-separated row counts.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--markdown", action="store_true", help="Print the scaling table as Markdown too.")
    args = parser.parse_args()
    for _ in range(args.repeats):
        if args.rows is not None:
            print(json.dumps(run_data_bench(args.rows, args.seed)), flush=True)
            continue
        result = run_data_scaling(tuple(int(s) for s in args.sizes.split(",")), args.seed)
        print(json.dumps(result), flush=True)
        if args.markdown:
            print(format_scaling(result), flush=True)


if __name__ == "__main__":
    main()
