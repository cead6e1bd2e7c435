"""Raw feature values → row ids of a checkpoint's vocabulary, for serving-sized batches.

`Vocabulary.encode` builds a hash table of the field's whole vocabulary on every call (Arrow's
`index_in`), right for encoding a dataset once, far too slow per request (~0.2 s for one row of 26
fields with 10^5 values each). `VocabularyIndex` builds its table once per arm: every kept value of
every field is hashed with a per-field seed into an open-addressing table (linear probing, at most
half full), and a request's values of all fields are looked up together by the compiled loops of
`lookup_kernel` (the hash, the layout and why it reads in passes are explained there). A candidate
counts only if it is the same field and the same bytes, so a hash collision can never map a value to
another value's row. The ids equal `Vocabulary.encode`'s: a kept value k has id k + 1, anything else
is 0 (`<UNK>`), and a missing value is looked up as `<MISSING>`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossadapt.data.vocabulary import MISSING_TOKEN, Vocabulary
from services.predictor import lookup_kernel
from services.predictor.hashing import as_large_string, text_seed

MAX_ENTRIES = 2**31 - 2  # a slot keeps the entry's number + 1 in 32 bits


class VocabularyIndex:
    """An open-addressing hash table over every (field, value) of a vocabulary, for exact lookups.

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
        if sizes.sum() > MAX_ENTRIES:
            raise ValueError(f"{sizes.sum()} vocabulary values: the index holds at most {MAX_ENTRIES}")
        self._values = pa.concat_arrays(values) if values else pa.array([], pa.large_string())
        field_of = np.repeat(np.arange(len(self.fields), dtype=np.int64), sizes)
        ids = np.arange(len(field_of), dtype=np.int64) - np.repeat(np.cumsum(sizes) - sizes, sizes) + 1
        self._seeds = np.array([text_seed(f"crossadapt-vocabulary\0{f}") for f in self.fields], dtype=np.uint64)
        self._offsets, self._bytes = _offsets_and_bytes(self._values)
        self._mask = (1 << max(int(2 * len(field_of)).bit_length(), 4)) - 1  # at most half full
        self._slots, self._entries, self._max_probes = lookup_kernel.build(
            self._offsets, self._bytes, field_of, ids, self._seeds, self._mask)
        if self.fields:  # compile the lookup now (or load it from numba's cache), not at the first request
            self.lookup_block(pa.array([MISSING_TOKEN] * len(self.fields), pa.large_string()), 1)

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, columns: Sequence[pa.Array]) -> np.ndarray:
        """``[B, C]`` int64 ids of ``C`` columns of ``B`` values each (text or integers; nulls = missing)."""
        if len(columns) != len(self.fields):
            raise ValueError(f"expected {len(self.fields)} columns, got {len(columns)}")
        if not columns:
            return np.zeros((0, 0), dtype=np.int64)
        return self.lookup_block(pa.concat_arrays([as_large_string(c) for c in columns]), len(columns[0]))

    def lookup_block(self, text: pa.Array, rows: int) -> np.ndarray:
        """``[B, C]`` int64 ids of the ``C·B`` values of all fields, field after field (large_string; nulls = missing)."""
        if text.null_count:
            text = pc.fill_null(text, MISSING_TOKEN)
        offsets, data = _offsets_and_bytes(text)
        if len(offsets) != len(self.fields) * rows + 1:
            raise ValueError(f"expected {len(self.fields)} fields of {rows} values, got {len(offsets) - 1} values")
        if not rows or not self.fields:
            return np.zeros((rows, len(self.fields)), dtype=np.int64)
        ids = lookup_kernel.lookup(offsets, data, rows, self._seeds, self._mask, self._slots, self._entries,
                                   self._offsets, self._bytes)
        return ids.reshape(len(self.fields), rows).T


def _offsets_and_bytes(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``[n + 1]`` int64 offsets into ``[m]`` uint8 bytes of a large_string array (views, no copy)."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset: text.offset + len(text) + 1]
    buffer = text.buffers()[2]
    return offsets, (np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8))


def warm_up() -> None:
    """Compile (or load from numba's cache) the index's loops: a one-value vocabulary is built and read."""
    VocabularyIndex(Vocabulary({"warm-up": pa.array(["x"])}), ["warm-up"])
