"""Pass 1 of streaming preparation: encode each chunk once and spill it to disk.

Per categorical field a :class:`GrowingDictionary` gives every distinct value a provisional code in
order of first appearance (codes never change as chunks arrive), so a chunk is stored as int32 codes;
counts are merged later by one ``bincount`` per chunk and field, and the frequency threshold is applied
at the end (the hist + train boundary is known only once every row has been read). Numerical values are
transformed (log2) with their missing masks, labels and optional columns converted, and a time-stamped
chunk is stably sorted by time, so each chunk on disk is a sorted run for the merge in
:mod:`crossadapt.data.time_merge`.

Memory: one chunk plus the distinct values seen so far (the dictionaries), never the rows. On disk, per
row: 4 bytes per categorical field, 5 per numerical field, 4 for the label and 4-8 per optional column,
written with plain ``write`` (page cache, not this process's memory) and read back by offset.

Layout of ``<folder>/chunk_<j>/<column>.bin``: ``categorical`` int32 ``[C, r]`` (field-major, so a field's
codes are contiguous), ``numerical`` float32 ``[N, r]``, ``missing`` bool ``[N, r]``, and ``label``,
``conversion``, ``prob`` float32, ``timestamp`` int64, ``user`` int64 (``user_text`` too for text user
keys that are all integers so far), each ``[r]``.
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
from crossadapt.data.vocabulary import MISSING_TOKEN

_WORKERS = 2  # Arrow's hashing and numpy's gathers release the GIL; the box has 2 cores
FLOAT_COLUMNS = ("label", "conversion", "prob")


class GrowingDictionary:
    """Distinct values of one field (text, ``<MISSING>`` for nulls) in order of first appearance."""

    def __init__(self) -> None:
        self.values: pa.Array = pa.array([], pa.string())

    def __len__(self) -> int:
        return len(self.values)

    def add(self, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """``[n]`` int32 codes of ``column``'s values, adding the new ones at the end."""
        column = _plain(column)
        encoded = pc.dictionary_encode(column, null_encoding="encode")
        chunk_values = pc.fill_null(pc.cast(encoded.dictionary, pa.string()), MISSING_TOKEN)
        known = len(self.values)
        if known:
            merged = pc.dictionary_encode(pa.concat_arrays([self.values, chunk_values]))
            positions = merged.indices.to_numpy(zero_copy_only=False)[known:]
            self.values = merged.dictionary
        else:  # the first chunk: its dictionary is distinct, except a literal "<MISSING>" next to nulls
            merged = pc.dictionary_encode(chunk_values)
            positions = merged.indices.to_numpy(zero_copy_only=False)
            self.values = merged.dictionary
        codes = encoded.indices.to_numpy(zero_copy_only=False)
        return positions.astype(np.int32, copy=False)[codes]


def _plain(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    """One contiguous array; dictionary-typed input (e.g. from Parquet) decoded to its values."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    return column


@dataclass
class ChunkInfo:
    rows: int
    first_time: int | None = None
    last_time: int | None = None


@dataclass
class SpilledRows:
    """What pass 1 leaves: chunk files, per-field dictionaries and the facts the encode pass needs."""

    folder: Path
    schema: DatasetSchema
    chunks: list[ChunkInfo]
    dictionaries: list[GrowingDictionary]
    missing_counts: np.ndarray  # [N] missing values per numerical field over all rows
    columns: list[str]  # optional per-row columns present, in OPTIONAL_COLUMNS order
    user_as_integers: bool = True  # text user keys: every chunk held integer text only
    chunk_files: list[Path] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(c.rows for c in self.chunks)

    @property
    def time_sorted(self) -> bool:
        """True when file order is already time order (or there is no time): no merge needed."""
        stamps = [(c.first_time, c.last_time) for c in self.chunks if c.rows]
        if self.schema.timestamp is None:
            return True
        return all(prev[1] <= nxt[0] for prev, nxt in zip(stamps, stamps[1:]))

    def read(self, chunk: int, column: str, start: int, stop: int, index: int = 0) -> np.ndarray:
        """Rows ``[start, stop)`` of one spilled column (``index``: the field for 2-D columns)."""
        rows = self.chunks[chunk].rows
        dtype = _SPILL_DTYPES[column]
        offset = (index * rows + start) * np.dtype(dtype).itemsize
        return np.fromfile(self.chunk_files[chunk] / f"{column}.bin", dtype=dtype, count=stop - start, offset=offset)

    def timestamps(self, chunk: int) -> np.ndarray:
        """The chunk's sorted times, memory-mapped read-only (binary searches touch few pages)."""
        return np.memmap(self.chunk_files[chunk] / "timestamp.bin", dtype=np.int64, mode="r")


_SPILL_DTYPES = {
    "categorical": np.int32, "numerical": np.float32, "missing": np.bool_, "label": np.float32,
    "conversion": np.float32, "prob": np.float32, "timestamp": np.int64, "user": np.int64, "user_text": np.int64,
}  # fmt: skip


class SpillWriter:
    """Encodes chunks into ``folder`` (see the module doc); ``finish()`` returns the :class:`SpilledRows`."""

    def __init__(self, folder: Path, schema: DatasetSchema, config: PrepareConfig):
        self.folder = folder
        self.schema = schema
        self.config = config
        folder.mkdir(parents=True, exist_ok=True)
        self.dictionaries = [GrowingDictionary() for _ in schema.categorical]
        self.missing_counts = np.zeros(len(schema.numerical), dtype=np.int64)
        self.chunks: list[ChunkInfo] = []
        self.chunk_files: list[Path] = []
        self.user_as_integers = True
        self._pool = ThreadPoolExecutor(_WORKERS)

    def add(self, table: pa.Table) -> int:
        """Encode and spill one chunk (columns named as the schema says); returns its rows."""
        schema, rows = self.schema, table.num_rows
        stamps = order = None
        if schema.timestamp is not None:
            stamps = epoch_seconds(table.column(schema.timestamp))
            if rows > 1 and not bool(np.all(stamps[1:] >= stamps[:-1])):
                order = np.argsort(stamps, kind="stable")
                stamps = stamps[order]

        def ordered(values: np.ndarray) -> np.ndarray:
            return values if order is None else values[order]

        folder = self.folder / f"chunk_{len(self.chunks):06d}"
        folder.mkdir()
        encode = lambda pair: ordered(pair[0].add(table.column(pair[1])))
        categorical = self._pool.map(encode, zip(self.dictionaries, schema.categorical))
        negative = self.config.negative_numerical == "missing"
        numeric = lambda name: numerical_with_missing(table.column(name), log_transform=self.config.log_transform,
                                                      negative_is_missing=negative)  # fmt: skip
        numerical = self._pool.map(numeric, schema.numerical)
        _write_rows(folder / "categorical.bin", categorical)
        with open(folder / "numerical.bin", "wb") as values, open(folder / "missing.bin", "wb") as missing:
            for j, (column, mask) in enumerate(numerical):
                ordered(column).tofile(values)
                ordered(mask).tofile(missing)
                self.missing_counts[j] += int(np.count_nonzero(mask))
        for name in FLOAT_COLUMNS:
            source = getattr(schema, name)
            if source is not None:
                ordered(to_float32(table.column(source))).tofile(folder / f"{name}.bin")
        if stamps is not None:
            stamps.tofile(folder / "timestamp.bin")
        if schema.user_id is not None:
            self._spill_user(table.column(schema.user_id), ordered, folder)
        info = ChunkInfo(rows)
        if stamps is not None and rows:
            info.first_time, info.last_time = int(stamps[0]), int(stamps[-1])
        self.chunks.append(info)
        self.chunk_files.append(folder)
        return rows

    def _spill_user(self, column: pa.ChunkedArray, ordered, folder: Path) -> None:
        """Text keys that are integers stay integers only if *every* chunk's are (as in memory), so both
        forms are kept until a chunk breaks the rule."""
        if not is_text(column):
            ordered(user_keys(column)).tofile(folder / "user.bin")
            return
        self.user_as_integers = self.user_as_integers and all_integer_text(column)
        ordered(hashed_user_keys(column)).tofile(folder / "user.bin")
        if self.user_as_integers:
            ordered(user_keys(pc.cast(pc.utf8_trim_whitespace(column), pa.int64()))).tofile(folder / "user_text.bin")

    def finish(self) -> SpilledRows:
        self._pool.shutdown()
        schema = self.schema
        columns = [name for name, source in (("conversion", schema.conversion), ("timestamp", schema.timestamp),
                                             ("user", schema.user_id), ("prob", schema.prob)) if source is not None]  # fmt: skip
        text_user = schema.user_id is not None and self.user_as_integers and any(
            (f / "user_text.bin").exists() for f in self.chunk_files
        )
        return SpilledRows(
            self.folder, schema, self.chunks, self.dictionaries, self.missing_counts, columns,
            user_as_integers=text_user, chunk_files=self.chunk_files,
        )  # fmt: skip


def _write_rows(path: Path, columns) -> None:
    with open(path, "wb") as f:
        for column in columns:
            column.tofile(f)
