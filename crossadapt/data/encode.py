"""Raw rows -> model arrays: time order, vocabulary (from hist + train only), ids, transforms.

Symbols: ``n`` rows, ``C`` categorical fields, ``N`` numerical fields.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from crossadapt.data.arrays import SplitArrays
from crossadapt.data.columns import epoch_seconds, numerical_with_missing, to_float32, user_keys
from crossadapt.data.missing import choose_indicator_fields, indicator_columns
from crossadapt.data.raw import RawData
from crossadapt.data.schema import PrepareConfig
from crossadapt.data.vocabulary import Vocabulary, build_field, field_codes

# Two workers: Arrow's hashing and numpy's gathers release the GIL, and the box has 2 cores.
_WORKERS = 2
_INTERLEAVE_ROWS = 1 << 16


@dataclass
class EncodedRows:
    """All rows in time order, encoded; ``vocabulary`` covers the schema's categorical fields.

    ``indicator_fields``: numerical fields whose missing indicator follows the value columns.
    """

    arrays: SplitArrays
    vocabulary: Vocabulary
    reused_fields: list[str]
    indicator_fields: list[str]


def interleave(columns: list[np.ndarray], rows: int, dtype: type) -> np.ndarray:
    """Stack ``C`` columns ``[n]`` into a row-major ``[n, C]`` array.

    Per block of rows: the columns are stacked field-major (contiguous copies), then transposed into
    place by numpy in cache-sized tiles, several times faster than writing whole columns into a
    row-major array (which strides over memory); the field-major copy is one block, not the whole.
    """
    out = np.empty((rows, len(columns)), dtype=dtype)
    if not columns:
        return out
    for start in range(0, rows, _INTERLEAVE_ROWS):
        stop = min(start + _INTERLEAVE_ROWS, rows)
        out[start:stop] = np.vstack([column[start:stop] for column in columns]).T
    return out


def time_order(raw: RawData) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(timestamps [n] int64 or None, the stable sorting permutation or None when already sorted)."""
    if raw.schema.timestamp is None:
        return None, None
    stamps = epoch_seconds(raw.table.column(raw.schema.timestamp))
    if stamps.size < 2 or bool(np.all(stamps[1:] >= stamps[:-1])):
        return stamps, None
    order = np.argsort(stamps, kind="stable")
    return stamps[order], order


def encode_rows(
    raw: RawData,
    config: PrepareConfig,
    *,
    vocabulary: Vocabulary | None = None,
    fit_rows: int | None = None,
    indicator_fields: list[str] | None = None,
) -> EncodedRows:
    """Encode ``raw`` into arrays in time order.

    A field in ``vocabulary`` keeps that vocabulary's ids (unknown values -> ``<UNK>``); any other
    field gets a new vocabulary counted over the first ``fit_rows`` rows in time order (hist + train;
    None means all rows). ``indicator_fields``: the missing indicators to add (None: chosen by
    ``config``'s mode for the source's format from this data's missing values).
    """
    schema, table = raw.schema, raw.table
    n = table.num_rows
    stamps, order = time_order(raw)
    fit = n if fit_rows is None else fit_rows
    reused = [f for f in schema.categorical if vocabulary is not None and f in vocabulary]

    def in_time_order(values: np.ndarray) -> np.ndarray:
        return values if order is None else values[order]

    def encode_field(field: str) -> tuple[np.ndarray, pa.Array | None, np.ndarray | None]:
        codes = field_codes(table.column(field))
        if order is not None:
            codes = type(codes)(codes.values, codes.codes[order])
        if field in reused:
            return vocabulary.id_map(field, codes.values)[codes.codes], None, None
        kept, counts, id_map = build_field(codes, fit, config.min_count_for(field))
        return id_map[codes.codes], kept, counts

    new_values, new_counts, id_columns = {}, {}, []
    with ThreadPoolExecutor(_WORKERS) as pool:
        for field, (ids, kept, counts) in zip(schema.categorical, pool.map(encode_field, schema.categorical)):
            id_columns.append(ids)
            if kept is not None:
                new_values[field], new_counts[field] = kept, counts
        negative = config.negative_numerical == "missing"
        transform = lambda f: numerical_with_missing(table.column(f), log_transform=config.log_transform,
                                                     negative_is_missing=negative)  # fmt: skip
        numeric = list(pool.map(transform, schema.numerical))
    values_columns = [in_time_order(values) for values, _ in numeric]
    missing = [in_time_order(mask) for _, mask in numeric]
    if indicator_fields is None:
        counts = np.array([int(mask.sum()) for mask in missing], dtype=np.int64)
        indicator_fields = choose_indicator_fields(schema, counts, config.indicator_mode(raw.source.format))
    categorical = interleave(id_columns, n, np.int32)
    numerical = interleave(values_columns + indicator_columns(schema, missing, indicator_fields), n, np.float32)

    def optional_float(name: str | None) -> np.ndarray | None:
        return None if name is None else in_time_order(to_float32(table.column(name)))

    values = {f: (vocabulary.values(f) if f in reused else new_values[f]) for f in schema.categorical}
    counts = {f: (vocabulary.counts(f) if f in reused else new_counts[f]) for f in schema.categorical}
    arrays = SplitArrays(
        categorical=categorical,
        numerical=numerical,
        label=optional_float(schema.label),
        conversion=optional_float(schema.conversion),
        timestamp=stamps,
        user=None if schema.user_id is None else in_time_order(user_keys(table.column(schema.user_id))),
        prob=optional_float(schema.prob),
    )
    return EncodedRows(arrays, Vocabulary(values, counts, check=False), reused, list(indicator_fields))
