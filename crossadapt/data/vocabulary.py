"""Per-field vocabularies: feature value -> row id of that field's embedding table.

Id 0 is ``<UNK>`` (values rarer than the threshold, or never seen where the vocabulary was built);
ids 1..V-1 are the kept values, most frequent first (ties by value), so the order is canonical
and :attr:`Vocabulary.hash` (sha256) identifies the mapping. A student reuses the teacher's
vocabulary (``Vocabulary.load(teacher_dataset)``) so that row i of both tables is the same value.

Encoding never loops over rows: a column is dictionary-encoded once (distinct values + per-row
codes), the small distinct-value array is mapped to ids, and ids = map[codes] is one numpy gather.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

UNK_TOKEN = "<UNK>"
MISSING_TOKEN = "<MISSING>"
_INDEX = "index.json"
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class FieldCodes:
    """A categorical column as distinct values (text) and one int32 code per row into them.

    Missing values are the token ``<MISSING>`` (one more distinct value).
    """

    values: pa.Array  # [U] string, distinct
    codes: np.ndarray  # [n] int32 in [0, U)


def field_codes(column: pa.ChunkedArray | pa.Array) -> FieldCodes:
    encoded = pc.dictionary_encode(column)
    chunks = encoded.chunks if isinstance(encoded, pa.ChunkedArray) else [encoded]
    chunks = [c for c in chunks if len(c)] or chunks[:1]
    if any(not _same_array(c.dictionary, chunks[0].dictionary) for c in chunks):
        # Encoding shares one dictionary across chunks, but an input that is already
        # dictionary-typed (e.g. from Parquet) may have one per chunk: unify them.
        chunks = [pa.chunked_array(chunks).combine_chunks()]
    values = pc.cast(chunks[0].dictionary, pa.string()) if chunks else pa.array([], pa.string())
    codes = np.concatenate([pc.fill_null(c.indices, -1).to_numpy(zero_copy_only=False) for c in chunks])
    codes = codes.astype(np.int32, copy=False)
    missing = codes < 0
    if missing.any():
        found = pc.index(values, MISSING_TOKEN).as_py()
        if found < 0:
            values = pa.concat_arrays([values, pa.array([MISSING_TOKEN], pa.string())])
            found = len(values) - 1
        codes = np.where(missing, np.int32(found), codes)
    return FieldCodes(values, codes)


def _same_array(a: pa.Array, b: pa.Array) -> bool:
    """Cheap identity test (same buffers), then a full comparison."""
    same_buffers = len(a) == len(b) and all(
        x is None and y is None or (x is not None and y is not None and x.address == y.address)
        for x, y in zip(a.buffers(), b.buffers())
    )
    return same_buffers or a.equals(b)


def build_field(codes: FieldCodes, fit_rows: int, min_count: int) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Count values in the first ``fit_rows`` codes; keep those seen >= ``min_count`` times.

    Returns (kept values [V-1] in id order, their counts [V-1] int64, id map [U] int32).
    """
    counts = np.bincount(codes.codes[:fit_rows], minlength=len(codes.values))
    keep = np.flatnonzero(counts >= min_count)
    kept_counts = counts[keep].astype(np.int64)
    kept = pa.table({"n": kept_counts, "v": codes.values.take(pa.array(keep))})
    order = pc.sort_indices(kept, sort_keys=[("n", "descending"), ("v", "ascending")]).to_numpy()
    id_map = np.zeros(len(codes.values), dtype=np.int32)
    id_map[keep[order]] = np.arange(1, len(keep) + 1, dtype=np.int32)
    return kept.column("v").combine_chunks().take(pa.array(order)), kept_counts[order], id_map


class Vocabulary:
    """Ordered fields, each an array of kept values (value k has id k+1) and their counts."""

    def __init__(
        self, values: dict[str, pa.Array], counts: dict[str, np.ndarray] | None = None, *, check: bool = True
    ):
        """``values[field][k]`` gets id k+1. ``check=False`` skips the distinctness check (for built vocabularies)."""
        self._values = {f: pc.cast(v, pa.string()) for f, v in values.items()}
        for field, vals in self._values.items() if check else ():
            if vals.null_count or len(pc.unique(vals)) != len(vals):
                raise ValueError(f"vocabulary of {field!r} must hold distinct non-null values")
        counts = counts or {}
        self._counts = {f: np.asarray(counts.get(f, np.zeros(len(v))), dtype=np.int64) for f, v in self._values.items()}
        self._hash: str | None = None

    @property
    def fields(self) -> list[str]:
        return list(self._values)

    def __contains__(self, field: str) -> bool:
        return field in self._values

    def size(self, field: str) -> int:
        """Rows of the field's table, ``<UNK>`` included."""
        return len(self._values[field]) + 1

    def values(self, field: str) -> pa.Array:
        return self._values[field]

    def counts(self, field: str) -> np.ndarray:
        """Occurrences of each kept value in the data the vocabulary was built from."""
        return self._counts[field]

    def id_map(self, field: str, values: pa.Array) -> np.ndarray:
        """``[len(values)]`` int32 ids of arbitrary values (unknown -> 0)."""
        found = pc.index_in(pc.cast(values, pa.string()), value_set=self._values[field])
        return (pc.fill_null(found, -1).to_numpy(zero_copy_only=False) + 1).astype(np.int32)

    def encode(self, field: str, column: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """``[n]`` int32 ids of a column (missing -> the ``<MISSING>`` value's id, or 0)."""
        codes = field_codes(column)
        return self.id_map(field, codes.values)[codes.codes]

    def decode(self, field: str, ids: np.ndarray) -> list[str]:
        """Values of ids (0 -> ``<UNK>``); for inspection, not for data paths."""
        table = pa.concat_arrays([pa.array([UNK_TOKEN], pa.string()), self._values[field]])
        return table.take(pa.array(np.asarray(ids, dtype=np.int64))).to_pylist()

    def subset(self, fields: list[str]) -> "Vocabulary":
        return Vocabulary({f: self._values[f] for f in fields}, {f: self._counts[f] for f in fields})

    @property
    def hash(self) -> str:
        """sha256 over fields in order: name, size, value lengths and bytes (a canonical encoding)."""
        if self._hash is None:
            digest = hashlib.sha256(b"crossadapt-vocabulary-v1\0")
            for field, vals in self._values.items():
                digest.update(field.encode() + b"\0" + np.int64(len(vals)).tobytes())
                text = pc.cast(vals, pa.large_string())
                offsets = np.frombuffer(text.buffers()[1], np.int64)[text.offset : text.offset + len(text) + 1]
                digest.update(np.diff(offsets).astype("<i8").tobytes())
                if len(text) and text.buffers()[2] is not None:
                    digest.update(memoryview(text.buffers()[2])[offsets[0] : offsets[-1]])
            self._hash = digest.hexdigest()
        return self._hash

    def save(self, directory: str | Path) -> None:
        """``directory/index.json`` plus one Parquet file (value, count) per field."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, field in enumerate(self._values):
            name = f"field_{i:03d}.parquet"
            pq.write_table(pa.table({"value": self._values[field], "count": self._counts[field]}), directory / name)
            entries.append({"name": field, "file": name, "size": self.size(field)})
        index = {"format_version": _FORMAT_VERSION, "hash": self.hash, "unk_token": UNK_TOKEN,
                 "missing_token": MISSING_TOKEN, "fields": entries}  # fmt: skip
        partial = directory / f".{_INDEX}.partial"
        partial.write_text(json.dumps(index, indent=2))
        os.replace(partial, directory / _INDEX)

    @classmethod
    def load(cls, path: str | Path) -> "Vocabulary":
        """Load from a prepared dataset folder or its ``vocab/`` folder; checks the stored hash."""
        path = Path(path)
        directory = path / "vocab" if (path / "vocab" / _INDEX).exists() else path
        index = json.loads((directory / _INDEX).read_text())
        values, counts = {}, {}
        for entry in index["fields"]:
            table = pq.read_table(directory / entry["file"])
            values[entry["name"]] = table.column("value").combine_chunks()
            counts[entry["name"]] = table.column("count").to_numpy()
        vocab = cls(values, counts)
        if vocab.hash != index["hash"]:
            raise ValueError(f"{directory}: vocabulary files do not match the hash in {_INDEX}")
        return vocab
