"""``RawData``: what every reader returns, plus the row checks every source goes through.

A reader parses its format into an Arrow table whose columns are named as in the schema; the
checks below then find rows that cannot be prepared (a missing or out-of-range label, a missing
time, an infinite number) and raise or drop them, like the parser does for malformed rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from crossadapt.data.columns import is_time_text
from crossadapt.data.errors import BadRow, BadRowReport, DataFormatError, OnBadRows
from crossadapt.data.schema import DatasetSchema


class SourceInfo(BaseModel):
    """Where a dataset came from; stored in the manifest."""

    model_config = ConfigDict(extra="forbid")

    format: str
    path: str | None = None
    rows: int = 0
    bad_rows: BadRowReport = Field(default_factory=BadRowReport)
    detail: dict[str, str | int | float] = Field(default_factory=dict)


@dataclass
class RawData:
    """A source table named as in ``schema``, before vocabulary, transforms and split.

    Rows map to physical lines of a text file for error messages: ``lines[i]`` when given, else
    ``first_line + i``; with neither (Parquet, in-memory tables) errors name the 0-based row
    ``row_offset + i`` (a streamed chunk's offset in its file).
    """

    table: pa.Table
    schema: DatasetSchema
    source: SourceInfo
    lines: np.ndarray | None = None
    first_line: int | None = None
    path: Path | None = None
    row_offset: int = 0

    def location(self, rows: np.ndarray) -> list[tuple[int | None, str]]:
        """(line, prefix) per row for messages: text files give a line, tables a row number."""
        if self.lines is not None:
            return [(int(self.lines[r]), "") for r in rows]
        if self.first_line is not None:
            return [(self.first_line + int(r), "") for r in rows]
        return [(None, f"row {self.row_offset + int(r)}: ") for r in rows]

    def drop_bad(self, bad: np.ndarray, column: str, reason: str, on_bad_rows: OnBadRows) -> "RawData":
        """Raise at the first row where ``bad`` holds, or drop those rows and count them."""
        rows = np.flatnonzero(bad)
        if rows.size == 0:
            return self
        where = self.location(rows[:20])
        if on_bad_rows == "error":
            line, prefix = where[0]
            raise DataFormatError(self.path, line, column, prefix + reason)
        examples = [BadRow(line=line, column=column, reason=prefix + reason) for line, prefix in where]
        self.source.bad_rows.add(f"{reason} ({column})", examples, count=int(rows.size))
        keep = ~bad
        self.table = self.table.filter(pa.array(keep))
        if self.lines is None and self.first_line is not None:
            self.lines = self.first_line + np.arange(len(keep), dtype=np.int64)
        self.lines = None if self.lines is None else self.lines[keep]
        return self


def check_columns_exist(table: pa.Table, schema: DatasetSchema, path: Path | None) -> None:
    """Every column the schema names must be in the table."""
    for column in schema.columns:
        if column not in table.column_names:
            raise DataFormatError(path, None, column, "the schema names this column but the data lacks it")


def _mask(values: pa.ChunkedArray | pa.Array, null: bool = True) -> np.ndarray:
    """A boolean Arrow column as numpy; nulls count as ``null``."""
    values = pc.fill_null(values, null)
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def validate_rows(raw: RawData, on_bad_rows: OnBadRows, *, allow_empty: bool = False) -> RawData:
    """Apply the checks every source needs; returns ``raw`` with bad rows dropped (skip mode).

    ``allow_empty``: a streamed chunk may lose all its rows; the stream as a whole is checked at its end.
    """
    schema = raw.schema
    check_columns_exist(raw.table, schema, raw.path)
    for name in (schema.label, schema.conversion, schema.prob):
        if name is None:
            continue
        column = raw.table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
            raise DataFormatError(raw.path, None, name, f"a label must be numeric, got {column.type}")
        column = pc.cast(column, pa.float64())
        raw = raw.drop_bad(_mask(pc.is_null(column, nan_is_null=True)), name, "missing value", on_bad_rows)
        column = pc.cast(raw.table.column(name), pa.float64())
        outside = pc.or_(pc.less(column, 0.0), pc.greater(column, 1.0))
        raw = raw.drop_bad(_mask(outside), name, "value outside [0, 1]", on_bad_rows)
    if schema.timestamp is not None:
        column = raw.table.column(schema.timestamp)
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            raw = raw.drop_bad(~_mask(is_time_text(column)), schema.timestamp, "not a time (epoch seconds or ISO-8601)", on_bad_rows)
        else:
            raw = raw.drop_bad(_mask(pc.is_null(column)), schema.timestamp, "missing time", on_bad_rows)
    for name in schema.numerical:
        column = raw.table.column(name)
        if not (pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type)):
            raise DataFormatError(raw.path, None, name, f"a numerical field must be numeric, got {column.type}")
        if pa.types.is_floating(column.type):
            raw = raw.drop_bad(_mask(pc.is_inf(column), null=False), name, "infinite value", on_bad_rows)
    if raw.table.num_rows == 0 and not allow_empty:
        raise DataFormatError(raw.path, None, None, "no rows left to prepare")
    raw.source.rows = raw.table.num_rows
    return raw
