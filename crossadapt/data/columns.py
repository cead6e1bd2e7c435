"""Column conversions from Arrow to the numpy arrays a prepared dataset stores (all vectorised).

Conventions (documented in ``PrepareConfig`` too):
- numerical: missing or NaN -> 0.0, then ``log2(x)`` where ``x > 2``; :func:`numerical_with_missing` also
  returns where a value was missing, for the per-field missing indicators (a missing value is not a 0);
- time: integers are taken as epoch seconds; dates/timestamps are converted to epoch seconds;
  ISO-8601 text is parsed;
- user keys: integers (or integer text) are kept; any other type becomes a stable 64-bit FNV-1a hash of its text
  (the same user gets the same key in every dataset); missing -> -1.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

ISO_TIME = r"^\d{4}-\d{2}-\d{2}([ T]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$"
INTEGER_TEXT = r"^\s*-?\d+\s*$"
ZONE_SUFFIX = r"(Z|[+-]\d{2}:?\d{2})$"
MISSING_USER = -1

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def combined(column: pa.ChunkedArray | pa.Array) -> pa.Array:
    return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column


def to_float32(column: pa.ChunkedArray | pa.Array, *, missing: float = np.nan) -> np.ndarray:
    """``[n]`` float32; nulls become ``missing``."""
    column = pc.fill_null(pc.cast(column, pa.float32()), missing)
    return np.array(combined(column).to_numpy(zero_copy_only=False), dtype=np.float32)  # a writable copy


def numerical_values(column: pa.ChunkedArray | pa.Array, *, log_transform: bool) -> np.ndarray:
    """``[n]`` float32 model input: missing/NaN -> 0, then log2(x) for x > 2."""
    x = to_float32(column, missing=0.0)
    x[np.isnan(x)] = 0.0
    if log_transform:
        big = x > 2
        x[big] = np.log2(x[big])
    return x


def numerical_with_missing(
    column: pa.ChunkedArray | pa.Array, *, log_transform: bool, negative_is_missing: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """(``[n]`` float32 model input, ``[n]`` bool missing): missing/NaN (and, if asked, negative) values
    become 0 with ``missing`` set; then log2(x) for x > 2, as :func:`numerical_values`."""
    x = to_float32(column, missing=np.nan)
    missing = np.isnan(x)
    if negative_is_missing:
        missing |= x < 0
    x[missing] = 0.0
    if log_transform:
        big = x > 2
        x[big] = np.log2(x[big])
    return x, missing


def is_time_text(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Boolean per row: text that parses as epoch seconds or ISO-8601 (nulls are ``False``)."""
    ok = pc.or_(pc.match_substring_regex(column, INTEGER_TEXT), pc.match_substring_regex(column, ISO_TIME))
    return pc.fill_null(ok, False)


def epoch_seconds(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """``[n]`` int64 epoch seconds from integer, float, date, timestamp or (validated) text columns."""
    kind = column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return _text_epoch_seconds(combined(column))
    if pa.types.is_timestamp(kind):
        column = pc.cast(column, pa.timestamp("s", tz=kind.tz))
        return combined(pc.fill_null(pc.cast(column, pa.int64()), 0)).to_numpy(zero_copy_only=False)
    if pa.types.is_date(kind):
        column = pc.cast(pc.cast(column, pa.timestamp("s")), pa.int64())
        return combined(pc.fill_null(column, 0)).to_numpy(zero_copy_only=False)
    if pa.types.is_floating(kind):
        column = pc.floor(column)
    return combined(pc.fill_null(pc.cast(column, pa.int64()), 0)).to_numpy(zero_copy_only=False)


def _text_epoch_seconds(text: pa.Array) -> np.ndarray:
    """Integer text is epoch seconds; ISO-8601 text without a zone is read as UTC."""
    null_text = pa.scalar(None, pa.string())
    text = pc.cast(text, pa.string())
    as_int = pc.fill_null(pc.match_substring_regex(text, INTEGER_TEXT), False)
    zoned = pc.fill_null(pc.match_substring_regex(text, ZONE_SUFFIX), False)
    ints = pc.cast(pc.utf8_trim_whitespace(pc.if_else(as_int, text, null_text)), pa.int64())
    naive = pc.if_else(pc.or_(as_int, zoned), null_text, text)
    naive = pc.cast(pc.cast(naive, pa.timestamp("ns")), pa.int64())
    with_zone = pc.cast(pc.cast(pc.if_else(zoned, text, null_text), pa.timestamp("ns", tz="UTC")), pa.int64())
    nanos = pc.fill_null(pc.coalesce(naive, with_zone), 0).to_numpy(zero_copy_only=False)
    seconds = np.floor_divide(nanos, 1_000_000_000)
    return np.where(as_int.to_numpy(zero_copy_only=False), pc.fill_null(ints, 0).to_numpy(zero_copy_only=False), seconds)


def stable_hash64(values: pa.Array) -> np.ndarray:
    """``[n]`` int64 FNV-1a hash of each value's UTF-8 text (nulls hash like the empty string).

    Vectorised over values; the only loop is over character positions (the longest value).
    """
    text = pc.cast(pc.fill_null(pc.cast(values, pa.string()), ""), pa.large_string())
    text = combined(text)
    offsets = np.frombuffer(text.buffers()[1], dtype=np.int64)[text.offset : text.offset + len(text) + 1]
    data = np.frombuffer(text.buffers()[2], dtype=np.uint8) if text.buffers()[2] is not None else np.zeros(0, np.uint8)
    starts, lengths = offsets[:-1], np.diff(offsets)
    h = np.full(len(text), _FNV_OFFSET, dtype=np.uint64)
    for position in range(int(lengths.max(initial=0))):
        active = np.flatnonzero(lengths > position)
        h[active] = (h[active] ^ data[starts[active] + position].astype(np.uint64)) * _FNV_PRIME
    return h.view(np.int64)


def is_text(column: pa.ChunkedArray | pa.Array) -> bool:
    return pa.types.is_string(column.type) or pa.types.is_large_string(column.type)


def all_integer_text(column: pa.ChunkedArray | pa.Array) -> bool:
    """True when every non-null value of a text column is an integer (the user key is then that integer)."""
    return pc.all(pc.match_substring_regex(column, INTEGER_TEXT)).as_py() is not False


def user_keys(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """``[n]`` int64 user keys: integers kept, anything else hashed (via its distinct values), nulls -1."""
    if pa.types.is_integer(column.type):
        return combined(pc.fill_null(pc.cast(column, pa.int64()), MISSING_USER)).to_numpy(zero_copy_only=False)
    if is_text(column) and all_integer_text(column):
        return user_keys(pc.cast(pc.utf8_trim_whitespace(column), pa.int64()))
    return hashed_user_keys(column)


def hashed_user_keys(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """``[n]`` int64 FNV-1a keys of each value's text (via its distinct values), nulls -1."""
    encoded = combined(pc.dictionary_encode(column))
    keys = stable_hash64(encoded.dictionary)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    out = np.full(len(codes), MISSING_USER, dtype=np.int64)
    present = codes >= 0
    out[present] = keys[codes[present]]
    return out
