"""A seeded 64-bit hash of text values, vectorised over a batch (no loop over rows or characters).

    seed(s)     = FNV-1a-64(s)                                         (one number per use: a salt, a field)
    h(seed, v)  = seed·P^L + Σ_j (b_j + 1)·P^(L-1-j)  mod 2^64         (b = v's L UTF-8 bytes, P = 0x100000001B3)

The sum is a polynomial in P, so a whole batch is a few numpy calls: every byte gets the power of
its distance to its row's end, and `np.add.reduceat` sums each row. `fmix64` (MurmurHash3's
finaliser) spreads the bits where a caller needs uniform low bits (bucketing).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PRIME = 0x100000001B3
_FNV_OFFSET = 0xCBF29CE484222325
_MASK = (1 << 64) - 1
_C1 = np.uint64(0xFF51AFD7ED558CCD)
_C2 = np.uint64(0xC4CEB9FE1A85EC53)
_S33 = np.uint64(33)


@lru_cache(maxsize=4096)
def text_seed(text: str) -> int:
    """FNV-1a-64 of a short text's UTF-8 bytes (a salt or a field name: once per use, not per row)."""
    h = _FNV_OFFSET
    for byte in text.encode():
        h = ((h ^ byte) * PRIME) & _MASK
    return h


def fmix64(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finaliser (a bijection with full avalanche) of a uint64 array.

    Array arithmetic on unsigned integers wraps modulo 2^64 silently, as the hash wants.
    """
    h = h ^ (h >> _S33)
    h *= _C1
    h ^= h >> _S33
    h *= _C2
    h ^= h >> _S33
    return h


def fmix64_int(h: int) -> int:
    """`fmix64` of one number in plain Python (a few integer operations: no array call for a single key)."""
    h ^= h >> 33
    h = (h * 0xFF51AFD7ED558CCD) & _MASK
    h ^= h >> 33
    h = (h * 0xC4CEB9FE1A85EC53) & _MASK
    return h ^ (h >> 33)


_POWERS = np.ones(1, dtype=np.uint64)


def _powers(count: int) -> np.ndarray:
    """At least ``count`` powers P^0, P^1, ... mod 2^64 (cached, grown on demand)."""
    global _POWERS
    if len(_POWERS) < count:
        powers = np.full(max(count, 2 * len(_POWERS), 128), PRIME, dtype=np.uint64)
        powers[0] = 1
        _POWERS = np.cumprod(powers, dtype=np.uint64)
    return _POWERS


def as_large_string(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous large_string array (integers become their decimal text)."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if not pa.types.is_large_string(values.type):
        if not pa.types.is_string(values.type):
            values = pc.cast(values, pa.string())
        values = pc.cast(values, pa.large_string())
    return values


def seeded_hash(values: pa.Array | pa.ChunkedArray, seeds: int | np.ndarray) -> np.ndarray:
    """``[n]`` uint64 h(seed, value) of text values (no nulls); ``seeds`` is one number or ``[n]`` uint64."""
    text = as_large_string(values)
    n = len(text)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset: text.offset + n + 1]
    buffer = text.buffers()[2]
    data = np.frombuffer(buffer, dtype=np.uint8) if buffer is not None else np.zeros(0, np.uint8)
    first, last = int(offsets[0]), int(offsets[-1])
    lengths = offsets[1:] - offsets[:-1]
    powers = _powers(int(lengths.max(initial=0)) + 1)
    # Byte i of row r has exponent end(r) - 1 - i; the rows' bytes are contiguous in `data`.
    exponents = np.repeat(offsets[1:] - 1, lengths) - np.arange(first, last, dtype=np.int64)
    terms = np.zeros(last - first + 1, dtype=np.uint64)  # a spare slot: reduceat may index one past the end
    np.multiply(data[first:last].astype(np.uint64) + np.uint64(1), powers[exponents], out=terms[:-1])
    sums = np.add.reduceat(terms, np.minimum(offsets[:-1] - first, last - first))
    sums[lengths == 0] = 0  # reduceat returns the element at an empty segment's start
    seed = np.uint64(seeds) if isinstance(seeds, int) else np.asarray(seeds, dtype=np.uint64)
    return seed * powers[lengths] + sums


def reference_hash(seed: int, value: str) -> int:
    """h(seed, value) for one value in plain Python: the specification the tests hold the batch form to."""
    h = seed
    for byte in value.encode():
        h = (h * PRIME + byte + 1) & _MASK
    return h
