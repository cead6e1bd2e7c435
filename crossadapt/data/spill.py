"""Pass 1 of streaming preparation: encode each block of rows once and spill it to disk as a *run*.

A run is one validated table from the source (a text block or a Parquet batch). Each categorical field
is dictionary-encoded within the run (its distinct values, ``<MISSING>`` for nulls, and int32 codes);
numerical values are transformed (log2) with their missing masks, labels and optional columns
converted; a time-stamped run is stably sorted by time, so each run on disk is a sorted run for the
merge in :mod:`crossadapt.data.time_merge`. Nothing is kept across runs but a few counters: the
runs' dictionaries are merged per field only after the whole source has been read
(:func:`merge_field`), which is also when the hist + train boundary (and so which rows count for the
vocabulary) is known.

Memory: the run being encoded, never the rows; merging one field's dictionaries holds that field's
distinct values plus one batch of run dictionaries. On disk, per row: 4 bytes per categorical field,
5 per numerical field, 4 for the label and 4-8 per optional column, written with plain ``write`` (the
page cache, not this process's memory) and read back by offset.

Layout of ``<folder>/run_<j>/``: ``categorical.bin`` int32 ``[C, r]`` (field-major: a field's codes are
contiguous), ``dictionaries.arrow`` (an Arrow IPC file, batch f = field f's distinct values),
``numerical.bin`` float32 ``[N, r]``, ``missing.bin`` bool ``[N, r]``, and ``label``, ``conversion``,
``prob`` float32, ``timestamp`` int64, ``user`` int64 (``user_text`` too for text user keys that are all
integers so far), each ``[r]``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossadapt.data.columns import (
    all_integer_text, epoch_seconds, hashed_user_keys, is_text, numerical_with_missing, to_float32, user_keys,
)  # fmt: skip
from crossadapt.data.schema import DatasetSchema, PrepareConfig
from crossadapt.data.vocabulary import MISSING_TOKEN, _same_array

_WORKERS = 2  # Arrow's hashing and numpy's gathers release the GIL; the box has 2 cores
FLOAT_COLUMNS = ("label", "conversion", "prob")
_VALUES = pa.schema([("v", pa.string())])
#: Merge run dictionaries at least this many values at a time (and at least the running dictionary's size,
#: so re-hashing the running dictionary costs O(log) per value over the whole source).
MERGE_BATCH_VALUES = 1 << 20


def encode_field(column: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(distinct values [U] as text, missing as ``<MISSING>``; ``[n]`` int32 codes into them).

    A literal ``<MISSING>`` next to nulls appears twice in the values; both merge into one later.
    """
    chunks = column.chunks if isinstance(column, pa.ChunkedArray) else [column]
    chunks = [c.dictionary_decode() if pa.types.is_dictionary(c.type) else c for c in chunks if len(c)] or chunks[:1]
    if pa.types.is_dictionary(chunks[0].type):
        chunks = [chunks[0].dictionary_decode()]
    encoded = pc.dictionary_encode(pa.chunked_array(chunks, type=chunks[0].type), null_encoding="encode")
    parts = encoded.chunks
    dictionary = parts[-1].dictionary  # every chunk carries the final, shared dictionary
    if not all(_same_array(p.dictionary, dictionary) for p in parts[:-1]):
        combined = encoded.combine_chunks()
        parts, dictionary = [combined], combined.dictionary
    codes = [p.indices.to_numpy(zero_copy_only=False) for p in parts]
    values = pc.fill_null(pc.cast(dictionary, pa.string()), MISSING_TOKEN)
    return values, (codes[0] if len(codes) == 1 else np.concatenate(codes)).astype(np.int32, copy=False)


@dataclass
class RunInfo:
    rows: int
    dictionary_sizes: list[int]  # [C] distinct values per categorical field in this run
    first_time: int | None = None
    last_time: int | None = None


@dataclass
class SpilledRows:
    """What pass 1 leaves: run files and the facts the encode pass needs."""

    folder: Path
    schema: DatasetSchema
    runs: list[RunInfo]
    missing_counts: np.ndarray  # [N] missing values per numerical field over all rows
    columns: list[str]  # optional per-row columns present
    user_as_integers: bool = False  # text user keys: every run held integer text only
    run_folders: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(r.rows for r in self.runs)

    @property
    def time_sorted(self) -> bool:
        """True when file order is already time order (or there is no time): no merge needed."""
        if self.schema.timestamp is None:
            return True
        stamps = [(r.first_time, r.last_time) for r in self.runs if r.rows]
        return all(prev[1] <= nxt[0] for prev, nxt in zip(stamps, stamps[1:]))

    def read(self, run: int, column: str, start: int, stop: int, index: int = 0) -> np.ndarray:
        """Rows ``[start, stop)`` of one spilled column (``index``: the field for 2-D columns)."""
        dtype = np.dtype(_SPILL_DTYPES[column])
        offset = (index * self.runs[run].rows + start) * dtype.itemsize
        return np.fromfile(self.run_folders[run] / f"{column}.bin", dtype=dtype, count=stop - start, offset=offset)

    def dictionary(self, run: int, index: int) -> pa.Array:
        """Field ``index``'s distinct values in run ``run`` (codes index into them)."""
        with pa.OSFile(str(self.run_folders[run] / "dictionaries.arrow")) as f:
            return pa.ipc.open_file(f).get_batch(index).column(0)

    def timestamps(self, run: int) -> np.ndarray:
        """The run's sorted times, memory-mapped read-only (binary searches touch few pages)."""
        return np.memmap(self.run_folders[run] / "timestamp.bin", dtype=np.int64, mode="r")


_SPILL_DTYPES = {
    "categorical": np.int32, "numerical": np.float32, "missing": np.bool_, "label": np.float32,
    "conversion": np.float32, "prob": np.float32, "timestamp": np.int64, "user": np.int64, "user_text": np.int64,
}  # fmt: skip


def merge_field(spilled: SpilledRows, index: int) -> tuple[pa.Array, list[np.ndarray]]:
    """Field ``index``'s distinct values over every run (first appearance first) and, per run, the
    position of each of its values in them (``[U_run]`` int32)."""
    values = pa.array([], pa.string())
    maps: list[np.ndarray] = []
    batch: list[pa.Array] = []
    pending = 0

    def merge() -> None:
        nonlocal values, batch, pending
        known = len(values)
        merged = pc.dictionary_encode(pa.concat_arrays([values, *batch]))
        positions = merged.indices.to_numpy(zero_copy_only=False).astype(np.int32, copy=False)
        start = known  # the known values are distinct and first: they keep positions 0..known-1
        for part in batch:
            maps.append(positions[start : start + len(part)])
            start += len(part)
        values, batch, pending = merged.dictionary, [], 0

    for run in range(len(spilled.runs)):
        part = spilled.dictionary(run, index)
        batch.append(part)
        pending += len(part)
        if pending >= max(len(values), MERGE_BATCH_VALUES):
            merge()
    if batch or not maps:
        merge()
    return values, maps


class SpillWriter:
    """Encodes tables into runs under ``folder`` (see the module doc); ``finish()`` returns the :class:`SpilledRows`."""

    def __init__(self, folder: Path, schema: DatasetSchema, config: PrepareConfig):
        self.folder = folder
        self.schema = schema
        self.config = config
        folder.mkdir(parents=True, exist_ok=True)
        self.missing_counts = np.zeros(len(schema.numerical), dtype=np.int64)
        self.runs: list[RunInfo] = []
        self.run_folders: list[Path] = []
        self.user_as_integers = True
        self._pool = ThreadPoolExecutor(_WORKERS)

    def add(self, table: pa.Table) -> int:
        """Encode and spill one run (columns named as the schema says); returns its rows."""
        schema, rows = self.schema, table.num_rows
        stamps = order = None
        if schema.timestamp is not None:
            stamps = epoch_seconds(table.column(schema.timestamp))
            if rows > 1 and not bool(np.all(stamps[1:] >= stamps[:-1])):
                order = np.argsort(stamps, kind="stable")
                stamps = stamps[order]

        def ordered(values: np.ndarray) -> np.ndarray:
            return values if order is None else values[order]

        folder = self.folder / f"run_{len(self.runs):06d}"
        folder.mkdir()
        categorical = self._pool.map(lambda name: encode_field(table.column(name)), schema.categorical)
        negative = self.config.negative_numerical == "missing"
        numeric = lambda name: numerical_with_missing(table.column(name), log_transform=self.config.log_transform,
                                                      negative_is_missing=negative)  # fmt: skip
        numerical = self._pool.map(numeric, schema.numerical)
        sizes = []
        with open(folder / "categorical.bin", "wb") as codes_file, pa.OSFile(str(folder / "dictionaries.arrow"), "wb") as sink:
            with pa.ipc.new_file(sink, _VALUES) as dictionaries:
                for values, codes in categorical:
                    ordered(codes).tofile(codes_file)
                    dictionaries.write_batch(pa.record_batch([values], schema=_VALUES))
                    sizes.append(len(values))
        with open(folder / "numerical.bin", "wb") as values_file, open(folder / "missing.bin", "wb") as missing_file:
            for j, (values, mask) in enumerate(numerical):
                ordered(values).tofile(values_file)
                ordered(mask).tofile(missing_file)
                self.missing_counts[j] += int(np.count_nonzero(mask))
        for name in FLOAT_COLUMNS:
            source = getattr(schema, name)
            if source is not None:
                ordered(to_float32(table.column(source))).tofile(folder / f"{name}.bin")
        if stamps is not None:
            stamps.tofile(folder / "timestamp.bin")
        if schema.user_id is not None:
            self._spill_user(table.column(schema.user_id), ordered, folder)
        info = RunInfo(rows, sizes)
        if stamps is not None and rows:
            info.first_time, info.last_time = int(stamps[0]), int(stamps[-1])
        self.runs.append(info)
        self.run_folders.append(folder)
        return rows

    def _spill_user(self, column: pa.ChunkedArray, ordered, folder: Path) -> None:
        """Text keys that are integers stay integers only if *every* run's are (as in memory), so both
        forms are kept until a run breaks the rule."""
        if not is_text(column):
            self.user_as_integers = False
            ordered(user_keys(column)).tofile(folder / "user.bin")
            return
        self.user_as_integers = self.user_as_integers and all_integer_text(column)
        ordered(hashed_user_keys(column)).tofile(folder / "user.bin")
        if self.user_as_integers:
            ordered(user_keys(pc.cast(pc.utf8_trim_whitespace(column), pa.int64()))).tofile(folder / "user_text.bin")

    def finish(self) -> SpilledRows:
        self._pool.shutdown()
        schema = self.schema
        present = {"conversion": schema.conversion, "timestamp": schema.timestamp, "user": schema.user_id, "prob": schema.prob}
        return SpilledRows(
            self.folder, schema, self.runs, self.missing_counts, [c for c, source in present.items() if source is not None],
            user_as_integers=schema.user_id is not None and self.user_as_integers, run_folders=self.run_folders,
        )  # fmt: skip
