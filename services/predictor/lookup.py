"""Raw feature values → row ids of a checkpoint's vocabulary, for serving-sized batches.

`Vocabulary.encode` builds a hash table of the field's whole vocabulary on every call (Arrow's
`index_in`), right for encoding a dataset once, far too slow per request (~0.2 s for one row of 26
fields with 10^5 values each). `VocabularyIndex` builds its table once per arm: every kept value of
every field is hashed with a per-field seed into an open-addressing table (linear probing, at most
half full). A value of at most 16 bytes (most categorical values: ids, hex hashes, short names) is
its two little-endian 64-bit words and its length, read for all values at once with one strided
gather; its hash mixes those words (a few array calls over the values, none over their bytes), and
a candidate is verified by comparing the words. A longer value is hashed with the polynomial hash of
hashing.py and verified byte by byte. A request's values of all fields are looked up together, one
probe round at a time for all of them (1-2 rounds on average), and a candidate counts only if it is
the same field and the same text, so a hash collision can never map a value to another value's row. The ids equal
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

SHORT_BYTES = 16  # values up to this long are keyed by two 64-bit words
_BUILD_CHUNK = 1 << 20
_LOW_BYTES = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=np.uint64)  # the low k bytes of a word
# By a value's length (capped at 16): the mask of its bytes in its first and in its second word.
_FIRST_WORD_MASK = _LOW_BYTES[np.minimum(np.arange(SHORT_BYTES + 1), 8)]
_SECOND_WORD_MASK = _LOW_BYTES[np.clip(np.arange(SHORT_BYTES + 1) - 8, 0, 8)]


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
        self._offsets, self._bytes = _offsets_and_bytes(self._values)
        self._lengths = np.diff(self._offsets)
        self._words = np.zeros((len(self._values), 2), dtype=np.uint64)  # a short value's bytes (else its first 16)
        for start in range(0, len(self._values), _BUILD_CHUNK):  # chunks bound the gather's scratch memory
            stop = min(start + _BUILD_CHUNK, len(self._values))
            first, last = int(self._offsets[start]), int(self._offsets[stop])
            offsets = self._offsets[start:stop + 1] - first
            self._words[start:stop] = _words(offsets, self._bytes[first:last], offsets[1:] - offsets[:-1])
        self._hashes = self._hash(self._values, self._offsets, self._lengths, self._words, self._field_of)
        self._mask = (1 << max(int(2 * len(self._hashes)).bit_length(), 4)) - 1  # at most half full
        self._slots, self._max_probes = _build_table(fmix64(self._hashes) & np.uint64(self._mask), self._mask)
        self._slot_hashes = np.zeros(len(self._slots), dtype=np.uint64)
        self._slot_hashes[self._slots >= 0] = self._hashes[self._slots[self._slots >= 0]]
        self._field_blocks: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self._hashes)

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
        field_of = self._fields_of(rows)
        offsets, data = _offsets_and_bytes(text)
        lengths = offsets[1:] - offsets[:-1]
        words = _words(offsets, data, lengths)
        hashes = self._hash(text, offsets, lengths, words, field_of)
        entry = self._probe(hashes)
        ids = np.zeros(len(hashes), dtype=np.int64)
        candidate = np.flatnonzero(entry >= 0)
        if len(candidate):
            stored = entry[candidate]
            same = ((self._lengths[stored] == lengths[candidate]) & (self._words[stored, 0] == words[candidate, 0])
                    & (self._words[stored, 1] == words[candidate, 1]) & (self._field_of[stored] == field_of[candidate]))
            long = np.flatnonzero(same & (lengths[candidate] > SHORT_BYTES))
            if len(long):  # equal first 16 bytes and length: compare the rest
                same[long] = self._same_text(offsets, data, candidate[long], stored[long])
            found = candidate[same]
            ids[found] = self._ids[entry[found]]
        return ids.reshape(len(self.fields), rows).T

    def _fields_of(self, rows: int) -> np.ndarray:
        """``[C·B]`` int32: the field of each value of a block of `rows` rows (kept for small batch sizes)."""
        field_of = self._field_blocks.get(rows)
        if field_of is None:
            field_of = np.repeat(np.arange(len(self.fields), dtype=np.int32), rows)
            if rows <= 64:
                field_of.flags.writeable = False
                self._field_blocks[rows] = field_of
        return field_of

    def _hash(self, text: pa.Array, offsets: np.ndarray, lengths: np.ndarray, words: np.ndarray,
              field_of: np.ndarray) -> np.ndarray:
        """``[n]`` uint64: short values from their words and length, long ones with the polynomial hash."""
        seeds = self._seeds[field_of]
        hashes = fmix64(words[:, 0] ^ fmix64(words[:, 1] ^ (seeds + lengths.astype(np.uint64))))
        long = np.flatnonzero(lengths > SHORT_BYTES)
        if len(long):
            hashes[long] = seeded_hash(text.take(pa.array(long)), seeds[long])
        return hashes

    def _same_text(self, offsets: np.ndarray, data: np.ndarray, queries: np.ndarray, entries: np.ndarray) -> np.ndarray:
        """``[n]`` bool: query value ``queries[i]`` has the same bytes as indexed value ``entries[i]``."""
        query_start = offsets[queries]
        length = offsets[queries + 1] - query_start
        entry_start = self._offsets[entries]
        same = (self._offsets[entries + 1] - entry_start) == length
        check = np.flatnonzero(same & (length > 0))
        if len(check):
            lengths = length[check]
            ends = np.cumsum(lengths)
            within = np.arange(int(ends[-1]), dtype=np.int64) - np.repeat(ends - lengths, lengths)
            differ = (data[np.repeat(query_start[check], lengths) + within]
                      != self._bytes[np.repeat(entry_start[check], lengths) + within])
            same[check[np.add.reduceat(differ, ends - lengths) > 0]] = False
        return same

    def _probe(self, hashes: np.ndarray) -> np.ndarray:
        """``[n]`` the entry with the same hash as each query, or -1.

        Each slot keeps its entry's hash, so a probe reads two arrays at the same slots. Most queries
        end at their home slot; the others read the rest of their longest possible probe sequence in
        one ``[p, max_probes - 1]`` gather (equal hashes share a home, so the first match is the entry).
        """
        entry = np.full(len(hashes), -1, dtype=np.int64)
        home = (fmix64(hashes) & np.uint64(self._mask)).astype(np.int64)
        held = self._slots[home]
        occupied = held >= 0
        match = occupied & (self._slot_hashes[home] == hashes)
        entry[match] = held[match]
        rest = np.flatnonzero(occupied & ~match)
        if len(rest) and self._max_probes > 1:
            at = (home[rest, None] + np.arange(1, self._max_probes)) & self._mask
            held = self._slots[at]
            match = (held >= 0) & (self._slot_hashes[at] == hashes[rest, None])
            found = np.flatnonzero(match.any(axis=1))
            entry[rest[found]] = held[found, match[found].argmax(axis=1)]
        return entry


def _build_table(home: np.ndarray, mask: int) -> tuple[np.ndarray, int]:
    """Linear-probing slots (entry index or -1) for entries with these home slots, and the longest probe."""
    slots = np.full(mask + 1, -1, dtype=np.int32 if mask < 2**31 else np.int64)
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


def _offsets_and_bytes(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """``[n + 1]`` int64 offsets into ``[m]`` uint8 bytes of a large_string array (views, no copy)."""
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset: text.offset + len(text) + 1]
    buffer = text.buffers()[2]
    return offsets, (np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8))


def _words(offsets: np.ndarray, data: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """``[n, 2]`` uint64: each value's first 16 bytes, zero-padded, as two little-endian words (two gathers
    from an unaligned word view of the bytes, then a mask by length). ``lengths``: the values' byte lengths."""
    starts = offsets[:-1]
    capped = np.minimum(lengths, SHORT_BYTES)
    padded = np.zeros(len(data) + SHORT_BYTES, dtype=np.uint8)
    padded[: len(data)] = data
    # Element i of this view is the little-endian word at byte i (strided by one byte, built in C: no copy).
    at_byte = np.ndarray((len(data) + SHORT_BYTES - 7,), dtype="<u8", buffer=padded, strides=(1,))
    words = np.empty((len(starts), 2), dtype=np.uint64)
    words[:, 0] = at_byte[starts] & _FIRST_WORD_MASK[capped]
    words[:, 1] = at_byte[starts + 8] & _SECOND_WORD_MASK[capped]
    return words
