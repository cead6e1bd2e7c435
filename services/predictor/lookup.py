"""Raw feature values → row ids of a checkpoint's vocabulary, for serving-sized batches.

`Vocabulary.encode` builds a hash table of the field's whole vocabulary on every call (Arrow's
`index_in`), right for encoding a dataset once, far too slow per request (~0.2 s for one row of 26
fields with 10^5 values each). `VocabularyIndex` builds its table once per arm: every kept value of
every field is hashed with a per-field seed (hashing.py) into an open-addressing table (linear
probing, at most half full). A request's values of all fields are looked up together, one probe
round at a time for all of them (1-2 rounds on average), and a candidate counts only if it is the
same field and the same text, so a hash collision can never map a value to another value's row. The ids equal
`Vocabulary.encode`'s: a kept value k has id k + 1, anything else is 0 (`<UNK>`), and a missing
value is looked up as `<MISSING>`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossadapt.data.vocabulary import MISSING_TOKEN, Vocabulary
from services.predictor.hashing import as_large_string, fmix64, seeded_hash, text_seed


class VocabularyIndex:
    """An open-addressing hash table over every (field, value) of a vocabulary, for exact vectorised lookups.

    Attributes:
        fields: the indexed fields, in the order `lookup` takes their columns (``C`` of them).
    """

    def __init__(self, vocabulary: Vocabulary, fields: Sequence[str]) -> None:
        self.fields = tuple(fields)
        missing = [f for f in self.fields if f not in vocabulary]
        if missing:
            raise KeyError(f"the vocabulary has no field(s) {missing}")
        values = [as_large_string(vocabulary.values(f)) for f in self.fields]
        sizes = np.array([len(v) for v in values], dtype=np.int64)
        self._values = pa.concat_arrays(values) if values else pa.array([], pa.large_string())
        self._field_of = np.repeat(np.arange(len(self.fields), dtype=np.int32), sizes)
        self._ids = (np.arange(len(self._field_of), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1)
        self._seeds = np.array([text_seed(f"crossadapt-vocabulary\0{f}") for f in self.fields], dtype=np.uint64)
        self._hashes = seeded_hash(self._values, self._seeds[self._field_of]) if len(self._values) else np.zeros(0, np.uint64)
        self._mask = (1 << max(int(2 * len(self._hashes)).bit_length(), 4)) - 1  # at most half full
        self._slots, self._max_probes = _build_table(fmix64(self._hashes) & np.uint64(self._mask), self._mask)

    def __len__(self) -> int:
        return len(self._hashes)

    def lookup(self, columns: Sequence[pa.Array]) -> np.ndarray:
        """``[B, C]`` int64 ids of ``C`` columns of ``B`` values each (text or integers; nulls = missing)."""
        if len(columns) != len(self.fields):
            raise ValueError(f"expected {len(self.fields)} columns, got {len(columns)}")
        if not columns:
            return np.zeros((0, 0), dtype=np.int64)
        rows = len(columns[0])
        text = pa.concat_arrays([as_large_string(c) for c in columns])
        if text.null_count:
            text = pc.fill_null(text, MISSING_TOKEN)
        field_of = np.repeat(np.arange(len(columns), dtype=np.int32), rows)
        hashes = seeded_hash(text, self._seeds[field_of])
        entry = self._probe(hashes, field_of)
        ids = np.zeros(len(hashes), dtype=np.int64)
        candidate = np.flatnonzero(entry >= 0)
        if len(candidate):
            stored = self._values.take(pa.array(entry[candidate]))
            same = pc.equal(stored, text.take(pa.array(candidate))).to_numpy(zero_copy_only=False)
            found = candidate[same]
            ids[found] = self._ids[entry[found]]
        return ids.reshape(len(columns), rows).T

    def _probe(self, hashes: np.ndarray, field_of: np.ndarray) -> np.ndarray:
        """``[n]`` the entry with the same hash and field as each query, or -1."""
        entry = np.full(len(hashes), -1, dtype=np.int64)
        slot = (fmix64(hashes) & np.uint64(self._mask)).astype(np.int64)
        pending = np.arange(len(hashes))
        for _ in range(self._max_probes):
            held = self._slots[slot[pending]]
            hit = held >= 0
            match = hit.copy()
            match[hit] = (self._hashes[held[hit]] == hashes[pending[hit]]) & (self._field_of[held[hit]] == field_of[pending[hit]])
            entry[pending[match]] = held[match]
            pending = pending[hit & ~match]  # an empty slot ends the search: the value is not indexed
            if not len(pending):
                break
            slot[pending] = (slot[pending] + 1) & self._mask
        return entry


def _build_table(home: np.ndarray, mask: int) -> tuple[np.ndarray, int]:
    """Linear-probing slots (entry index or -1) for entries with these home slots, and the longest probe."""
    slots = np.full(mask + 1, -1, dtype=np.int64)
    position = home.astype(np.int64)
    pending = np.arange(len(home), dtype=np.int64)
    probes = 0
    while len(pending):
        probes += 1
        free = slots[position[pending]] < 0
        # Of the entries aiming at the same free slot, the first one takes it; the others move on.
        targets = position[pending[free]]
        _, first = np.unique(targets, return_index=True)
        placed = pending[free][first]
        slots[position[placed]] = placed
        taken = np.zeros(len(pending), dtype=bool)
        taken[np.flatnonzero(free)[first]] = True
        pending = pending[~taken]
        position[pending] = (position[pending] + 1) & mask
    return slots, max(probes, 1)
