"""Streaming preparation, pass 2: spilled runs -> each split's ``.npy`` files, written front to back.

Blocks come in time order (:mod:`crossadapt.data.time_merge`); a block's codes become vocabulary ids
through its runs' ``ids.bin`` (:class:`crossadapt.data.stream_vocab.RunIds`), its columns are stacked
row-major as the split files store them, and appended to its split's files, whose headers were written
first (the row counts are known). Nothing is memory-mapped for writing, so the process holds one block.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from crossadapt.data.arrays import OPTIONAL_COLUMNS
from crossadapt.data.encode import interleave
from crossadapt.data.prepared import SplitStats
from crossadapt.data.progress import Progress
from crossadapt.data.spill import SpilledRows
from crossadapt.data.stream_vocab import RunIds
from crossadapt.data.time_merge import Block


class NpyWriter:
    """A ``.npy`` file of known shape written front to back (never memory-mapped)."""

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self.rows = 0
        self._file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, array: np.ndarray) -> None:
        np.ascontiguousarray(array, dtype=self.dtype).tofile(self._file)
        self.rows += len(array)

    def close(self) -> None:
        self._file.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.path}: wrote {self.rows} rows, expected {self.shape[0]}")


class SplitWriter:
    """One split's files, written block by block, and its statistics."""

    def __init__(self, folder: Path, rows: int, widths: dict[str, int], columns: list[str]):
        folder.mkdir(parents=True, exist_ok=True)
        dtypes = {"categorical": np.int32, "numerical": np.float32, "label": np.float32, "conversion": np.float32,
                  "timestamp": np.int64, "user": np.int64, "prob": np.float32}  # fmt: skip
        self.writers = {
            c: NpyWriter(folder / f"{c}.npy", dtypes[c], (rows, widths[c]) if c in widths else (rows,)) for c in columns
        }
        self.rows, self.clicks, self.conversions = rows, 0.0, 0.0
        self.first_time: int | None = None
        self.last_time: int | None = None

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        for name, writer in self.writers.items():
            writer.write(arrays[name])
        self.clicks += float(arrays["label"].sum(dtype=np.float64))
        if "conversion" in arrays:
            self.conversions += float(arrays["conversion"].sum(dtype=np.float64))
        if "timestamp" in arrays and len(arrays["timestamp"]):
            if self.first_time is None:
                self.first_time = int(arrays["timestamp"][0])
            self.last_time = int(arrays["timestamp"][-1])

    def close(self) -> SplitStats:
        for writer in self.writers.values():
            writer.close()
        rows, clicks = self.rows, self.clicks
        return SplitStats(
            rows=rows,
            click_rate=clicks / rows if rows else 0.0,
            conversion_rate=None if "conversion" not in self.writers or not clicks else self.conversions / clicks,
            time_range=None if self.first_time is None else (self.first_time, self.last_time),
        )


def read_block(
    spilled: SpilledRows, block: Block, run_ids: RunIds, indicators: list[int], pool: ThreadPoolExecutor | None = None
) -> dict[str, np.ndarray]:
    """A block's rows as the split files store them: ids, values then indicators, optional columns.

    With a ``pool`` the categorical and the numerical part are assembled on two threads.
    """
    schema = spilled.schema

    def gather(column: str, index: int = 0, ids: bool = False) -> np.ndarray:
        """The column over the block's slices (``ids``: categorical codes mapped to vocabulary ids)."""
        parts = [spilled.read(run, column, start, stop, index) for run, start, stop in block.slices]
        if ids:
            parts = [run_ids.field(run, index)[part] for (run, _, _), part in zip(block.slices, parts)]
        column = parts[0] if len(parts) == 1 else np.concatenate(parts)
        return column if order is None else column[order]

    order = None
    if block.merge:
        order = np.argsort(gather("timestamp"), kind="stable")
    run_ids.load([run for run, _, _ in block.slices])

    def categorical() -> np.ndarray:
        return interleave([gather("categorical", f, ids=True) for f in range(len(schema.categorical))], block.rows, np.int32)

    def numerical() -> np.ndarray:
        columns = [gather("numerical", j) for j in range(len(schema.numerical))]
        columns += [gather("missing", j).astype(np.float32) for j in indicators]
        return interleave(columns, block.rows, np.float32)

    if pool is None:
        out = {"categorical": categorical(), "numerical": numerical()}
    else:
        ids_part = pool.submit(categorical)
        out = {"numerical": numerical(), "categorical": ids_part.result()}
    out["label"] = gather("label")
    for name in spilled.columns:
        out[name] = gather("user_text" if name == "user" and spilled.user_as_integers else name)
    return out


def write_splits(
    spilled: SpilledRows,
    blocks: list[Block],
    run_ids: RunIds,
    indicator_fields: list[str],
    folders: dict[str, Path],
    progress: Progress,
) -> dict[str, SplitStats]:
    """Pass 2: every block in order into its split's files; returns the splits' statistics."""
    schema = spilled.schema
    indicators = [schema.numerical.index(f) for f in indicator_fields]
    columns = ["categorical", "numerical", "label"] + [c for c in OPTIONAL_COLUMNS if c in spilled.columns]
    widths = {"categorical": len(schema.categorical), "numerical": len(schema.numerical) + len(indicators)}
    sizes: dict[str, int] = {}
    for block in blocks:
        sizes[block.split] = sizes.get(block.split, 0) + block.rows
    writers = {name: SplitWriter(folders[name], rows, widths, columns) for name, rows in sizes.items()}
    done = 0
    with progress.stage("writing", total_rows=spilled.rows) as update, ThreadPoolExecutor(1) as pool:
        for block in blocks:
            if block.rows:
                writers[block.split].write(read_block(spilled, block, run_ids, indicators, pool))
                done += block.rows
                update(rows=done)
    return {name: writer.close() for name, writer in writers.items()}


def present_columns(spilled: SpilledRows) -> list[str]:
    return ["categorical", "numerical", "label"] + [c for c in OPTIONAL_COLUMNS if c in spilled.columns]
