"""Compiled loops (numba) of the vocabulary index: hashing, building the table, looking values up.

A serving lookup is bound by memory latency, not arithmetic: the table of a Criteo-sized vocabulary
(millions of slots) is far larger than the cache, so each value costs a miss in the slot array and a
miss in the entry it points to. The layout keeps it at those two misses: a slot is one int64
(the entry's number + 1, and the top 32 bits of its hash as a tag, so a probe rarely reads an entry
that cannot match) and an entry is one 32-byte record (its first 16 bytes as two words, its length
and field, its id), so a value of at most 16 bytes is verified without reading the vocabulary's
bytes. The lookup runs in passes (hashes, home slots, candidate entries, verification), so the loads of
different values are independent and the core keeps many misses in flight (a single loop that
walks slot → entry → bytes per value waits for each miss in turn, and was no faster than the numpy form).

    h(value) = fmix(w0 ^ fmix(w1 ^ (seed + length)))     value of at most 16 bytes: its two little-endian words
             = seed·P^L + Σ_j (b_j + 1)·P^(L-1-j)         longer values: hashing.py's polynomial hash
    home     = fmix(h) mod table size; linear probing; tag = h >> 32
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, uint64

SHORT_BYTES = 16
PRIME = uint64(0x100000001B3)
_C1 = uint64(0xFF51AFD7ED558CCD)
_C2 = uint64(0xC4CEB9FE1A85EC53)
_LOW32 = 0xFFFFFFFF


def compiled(**options: Any) -> Callable[[Callable], Any]:
    """`numba.njit` with its machine code cached on disk (NUMBA_CACHE_DIR, else beside the source) where a cache
    folder is writable; where none is (a read-only root file system), numba refuses `cache=True` outright, so
    the function is compiled in memory at each start instead."""
    def decorate(function: Callable) -> Any:
        try:
            return njit(cache=True, **options)(function)
        except RuntimeError:  # "cannot cache function ...: no locator available"
            return njit(**options)(function)

    return decorate


# An entry record's columns.
FIRST_WORD, SECOND_WORD, LENGTH_AND_FIELD, ROW_ID = 0, 1, 2, 3


@compiled(inline="always")
def fmix(h):  # noqa: ANN001, ANN201 - numba infers the types
    """MurmurHash3's 64-bit finaliser (hashing.fmix64 of one number)."""
    h ^= h >> uint64(33)
    h *= _C1
    h ^= h >> uint64(33)
    h *= _C2
    h ^= h >> uint64(33)
    return h


@compiled(inline="always")
def little_endian(data, start, length):  # noqa: ANN001, ANN201
    """The unsigned little-endian number of the `length` (0..8) bytes at `start`."""
    word = uint64(0)
    for k in range(length):
        word |= uint64(data[start + k]) << uint64(8 * k)
    return word


@compiled(inline="always")
def _words(data, start, length):  # noqa: ANN001, ANN202
    """A value's first 16 bytes as two little-endian words, zero-padded."""
    return little_endian(data, start, min(length, 8)), little_endian(data, start + 8, min(max(length - 8, 0), 8))


@compiled()
def value_hash(data, start, length, seed):  # noqa: ANN001, ANN201
    """h(value) of the `length` bytes at `start` (see the module's docstring)."""
    if length > SHORT_BYTES:
        h = seed
        for k in range(length):
            h = h * PRIME + uint64(data[start + k]) + uint64(1)
        return h
    first, second = _words(data, start, length)
    return fmix(first ^ fmix(second ^ (seed + uint64(length))))


@compiled()
def build(offsets, data, field_of, ids, seeds, mask):  # noqa: ANN001, ANN201
    """(``[mask + 1]`` int64 slots, ``[n, 4]`` uint64 entry records, longest probe) of n values
    (`offsets`/`data`: a large_string's buffers) of fields `field_of` with row ids `ids`."""
    count = len(offsets) - 1
    slots = np.zeros(mask + 1, dtype=np.int64)
    entries = np.empty((count, 4), dtype=np.uint64)
    longest = 1
    for i in range(count):
        start = offsets[i]
        length = offsets[i + 1] - start
        h = value_hash(data, start, length, seeds[field_of[i]])
        first, second = _words(data, start, length)
        entries[i, FIRST_WORD] = first
        entries[i, SECOND_WORD] = second
        entries[i, LENGTH_AND_FIELD] = uint64(length) | (uint64(field_of[i]) << uint64(32))
        entries[i, ROW_ID] = uint64(ids[i])
        slot = np.int64(fmix(h) & uint64(mask))  # int64: uint64 + int is a float in numba
        probes = 1
        while slots[slot] != 0:
            slot = (slot + 1) & mask
            probes += 1
        slots[slot] = np.int64(((h >> uint64(32)) << uint64(32)) | uint64(i + 1))
        longest = max(longest, probes)
    return slots, entries, longest


@compiled(inline="always")
def _same_head(records, row, meta, first, second):  # noqa: ANN001, ANN202
    """Entry record `row` has the value's length and field (`meta`) and first 16 bytes (`first`, `second`)."""
    return (records[row, LENGTH_AND_FIELD] == meta and records[row, FIRST_WORD] == first
            and records[row, SECOND_WORD] == second)


@compiled(inline="always")
def _same_tail(data, start, length, entry_bytes, entry_start):  # noqa: ANN001, ANN202
    """Bytes 16.. of a long value equal the entry's (its first 16 bytes and length already do)."""
    for k in range(SHORT_BYTES, length):
        if data[start + k] != entry_bytes[entry_start + k]:
            return False
    return True


@compiled()
def lookup(offsets, data, rows, seeds, mask, slots, entries, entry_offsets, entry_bytes):  # noqa: ANN001, ANN201
    """``[C·B]`` int64 ids of C·B values (field after field, `rows` per field): the id of the entry of the
    same field with the same bytes, else 0.

    Four passes, so that the table reads (cache misses) sit in short loops of independent loads the core
    overlaps: hash every value; read every home slot; read every home slot's entry record; verify, and
    probe on (one value at a time) only where the home slot did not hold the value."""
    count = len(offsets) - 1
    home = np.empty(count, dtype=np.int64)
    tags = np.empty(count, dtype=np.uint64)
    words = np.empty((count, 3), dtype=np.uint64)  # the value's two words, its length and field
    for i in range(count):
        start = offsets[i]
        length = offsets[i + 1] - start
        h = value_hash(data, start, length, seeds[i // rows])
        home[i] = np.int64(fmix(h) & uint64(mask))  # int64: uint64 + int is a float in numba
        tags[i] = h >> uint64(32)
        words[i, 0], words[i, 1] = _words(data, start, length)
        words[i, 2] = uint64(length) | (uint64(i // rows) << uint64(32))
    held = np.empty(count, dtype=np.int64)
    for i in range(count):
        held[i] = slots[home[i]]
    candidates = np.zeros((count, 4), dtype=np.uint64)
    for i in range(count):
        if held[i] != 0:
            entry = (held[i] & _LOW32) - 1
            for k in range(4):
                candidates[i, k] = entries[entry, k]
    ids = np.zeros(count, dtype=np.int64)
    for i in range(count):
        start = offsets[i]
        length = offsets[i + 1] - start
        first, second, meta = words[i, 0], words[i, 1], words[i, 2]
        value = held[i]
        if value != 0 and (uint64(value) >> uint64(32)) == tags[i] and _same_head(candidates, i, meta, first, second) \
                and (length <= SHORT_BYTES
                     or _same_tail(data, start, length, entry_bytes, entry_offsets[(value & _LOW32) - 1])):
            ids[i] = np.int64(candidates[i, ROW_ID])
            continue
        slot = home[i]
        while value != 0:  # not at home: probe on
            slot = (slot + 1) & mask
            value = slots[slot]
            entry = (value & _LOW32) - 1
            if value != 0 and (uint64(value) >> uint64(32)) == tags[i] and _same_head(entries, entry, meta, first,
                                                                                      second) \
                    and (length <= SHORT_BYTES or _same_tail(data, start, length, entry_bytes, entry_offsets[entry])):
                ids[i] = np.int64(entries[entry, ROW_ID])
                break
    return ids
