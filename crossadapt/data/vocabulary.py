"""Per-field vocabularies: feature value -> row id of that field's embedding table.

Id 0 is ``<UNK>`` (values rarer than the threshold, or never seen where the vocabulary was built);
ids 1..V-1 are the kept values, most frequent first (ties by value), so the order is canonical
and :attr:`Vocabulary.hash` (sha256) identifies the mapping. A student reuses the teacher's
vocabulary (``Vocabulary.load(teacher_dataset)``) so that row i of both tables is the same value.

Encoding never loops over rows: a column is dictionary-encoded once (distinct values + per-row
codes), the small distinct-value array is mapped to ids, and ids = map[codes] is one numpy gather.

Versions: a vocabulary only ever grows by appending values at the end of a field (ids never change),
so version v is the prefix of every field that held ``history[v-1].sizes`` rows, and its hash is the
hash of that prefix. A freshly built vocabulary is version 1; :meth:`Vocabulary.grow` makes version
v+1. A checkpoint names the version it was trained with by its ``vocab_hash`` (optionally with the
version number, :class:`VocabularyRef`); :meth:`Vocabulary.resolve` gives that version back.
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
from pydantic import BaseModel, ConfigDict, Field

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
    return build_field_from_counts(codes.values, counts, min_count)


def build_field_from_counts(
    values: pa.Array, counts: np.ndarray, min_count: int, *, first_id: int = 1
) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """Keep the distinct ``values`` [U] whose ``counts`` [U] reach ``min_count``, most frequent first
    (ties by value), with ids from ``first_id`` on.

    Returns (kept values in id order, their counts int64, id map [U] int32 with 0 for the others).
    """
    keep = np.flatnonzero(counts >= min_count)
    kept_counts = counts[keep].astype(np.int64)
    kept = pa.table({"n": kept_counts, "v": pc.cast(values, pa.string()).take(pa.array(keep))})
    order = pc.sort_indices(kept, sort_keys=[("n", "descending"), ("v", "ascending")]).to_numpy()
    id_map = np.zeros(len(values), dtype=np.int32)
    id_map[keep[order]] = np.arange(first_id, first_id + len(keep), dtype=np.int32)
    return kept.column("v").combine_chunks().take(pa.array(order)), kept_counts[order], id_map


class VocabularyVersion(BaseModel):
    """One version of a vocabulary: its number, hash and rows per field (``<UNK>`` included)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    hash: str
    sizes: dict[str, int]


class VocabularyRef(BaseModel):
    """How a checkpoint names the vocabulary it was trained with (store it in the checkpoint's manifest:
    ``vocab_hash`` is the hash, ``extra["vocab_version"]`` the number)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: int = Field(ge=1)
    hash: str


class Vocabulary:
    """Ordered fields, each an array of kept values (value k has id k+1) and their counts."""

    def __init__(
        self,
        values: dict[str, pa.Array],
        counts: dict[str, np.ndarray] | None = None,
        *,
        check: bool = True,
        history: list[VocabularyVersion] | None = None,
    ):
        """``values[field][k]`` gets id k+1. ``check=False`` skips the distinctness check (for built
        vocabularies). ``history``: the versions so far, the last one being this vocabulary (None: a
        fresh vocabulary, version 1)."""
        self._values = {f: pc.cast(v, pa.string()) for f, v in values.items()}
        for field, vals in self._values.items() if check else ():
            if vals.null_count or len(pc.unique(vals)) != len(vals):
                raise ValueError(f"vocabulary of {field!r} must hold distinct non-null values")
        counts = counts or {}
        self._counts = {f: np.asarray(counts.get(f, np.zeros(len(v))), dtype=np.int64) for f, v in self._values.items()}
        self._hash: str | None = None
        self._history = list(history) if history else None
        if self._history is not None and self._history[-1].sizes != self.sizes:
            raise ValueError(f"the last version in the history has sizes {self._history[-1].sizes}, the values {self.sizes}")

    @property
    def sizes(self) -> dict[str, int]:
        """Rows per field's table (``<UNK>`` included)."""
        return {f: self.size(f) for f in self._values}

    @property
    def history(self) -> list[VocabularyVersion]:
        """Every version, oldest first; the last is this vocabulary."""
        if self._history is None:
            self._history = [VocabularyVersion(version=1, hash=self.hash, sizes=self.sizes)]
        return list(self._history)

    @property
    def version(self) -> int:
        return self.history[-1].version

    @property
    def ref(self) -> VocabularyRef:
        return VocabularyRef(version=self.version, hash=self.hash)

    def grow(self, additions: dict[str, tuple[pa.Array, np.ndarray]]) -> "Vocabulary":
        """Version + 1 with ``additions[field] = (new values, their counts)`` appended to those fields
        (ids of existing values never change). Values already present, repeated or null are an error."""
        unknown = [f for f in additions if f not in self._values]
        if unknown:
            raise KeyError(f"no field {unknown[0]!r} in the vocabulary; fields are {self.fields}")
        values, counts = dict(self._values), dict(self._counts)
        for field, (new, new_counts) in additions.items():
            new = pc.cast(new, pa.string())
            new_counts = np.asarray(new_counts, dtype=np.int64)
            if len(new_counts) != len(new):
                raise ValueError(f"field {field!r}: {len(new)} values but {len(new_counts)} counts")
            if new.null_count or len(pc.unique(new)) != len(new) or bool(pc.any(pc.is_in(new, self._values[field])).as_py()):
                raise ValueError(f"field {field!r}: new values must be distinct, non-null and not in the vocabulary")
            values[field] = pa.concat_arrays([self._values[field], new])
            counts[field] = np.concatenate([self._counts[field], new_counts])
        grown = Vocabulary(values, counts, check=False)
        grown._history = self.history + [VocabularyVersion(version=self.version + 1, hash=grown.hash, sizes=grown.sizes)]
        return grown

    def at_version(self, version: int) -> "Vocabulary":
        """The vocabulary as it was at ``version`` (each field's first rows); its hash is checked."""
        history = self.history
        if not 1 <= version <= len(history):
            raise ValueError(f"no vocabulary version {version}; versions are 1..{len(history)}")
        entry = history[version - 1]
        values = {f: self._values[f].slice(0, entry.sizes[f] - 1) for f in self._values}
        counts = {f: self._counts[f][: entry.sizes[f] - 1] for f in self._values}
        old = Vocabulary(values, counts, check=False, history=history[:version])
        if old.hash != entry.hash:
            raise ValueError(f"vocabulary version {version}: the values do not match its recorded hash")
        return old

    def version_of(self, vocab_hash: str) -> int | None:
        """The version whose hash is ``vocab_hash`` (None: no version of this vocabulary)."""
        return next((v.version for v in self.history if v.hash == vocab_hash), None)

    def resolve(self, ref: VocabularyRef | str) -> "Vocabulary":
        """The version a checkpoint names (a :class:`VocabularyRef` or a bare ``vocab_hash``)."""
        wanted = ref if isinstance(ref, str) else ref.hash
        version = self.version_of(wanted)
        if version is None or (isinstance(ref, VocabularyRef) and ref.version != version):
            raise ValueError(f"vocabulary {wanted[:12]} is not a version of this vocabulary "
                             f"(versions: {[(v.version, v.hash[:12]) for v in self.history]})")  # fmt: skip
        return self.at_version(version)

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
        """Those fields only: a new vocabulary (version 1 of its own)."""
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
                 "missing_token": MISSING_TOKEN, "fields": entries, "version": self.version,
                 "history": [v.model_dump() for v in self.history]}  # fmt: skip
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
        history = [VocabularyVersion.model_validate(v) for v in index.get("history", [])] or None
        vocab = cls(values, counts, history=history)
        if vocab.hash != index["hash"] or (history is not None and history[-1].hash != index["hash"]):
            raise ValueError(f"{directory}: vocabulary files do not match the hash in {_INDEX}")
        return vocab
