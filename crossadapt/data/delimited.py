"""Fast delimited-text reading (pyarrow.csv) that still names the line and column of a bad row.

The fast path parses with all cores and explicit column types. Only when something is wrong
(wrong column count, a non-numeric value in a numeric column) is the file read again on one
thread, which is when pyarrow reports physical line numbers; that second pass finds every bad
row, then raises (``on_bad_rows="error"``) or drops and counts them (``"skip"``).
A row is one physical line: quoted newlines are not supported (Criteo/Avazu have none).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from crossadapt.data.errors import BadRow, BadRowReport, DataFormatError, OnBadRows

Kind = Literal["category", "float", "int"]

_ARROW_TYPES: dict[str, pa.DataType] = {"category": pa.string(), "float": pa.float32(), "int": pa.int64()}
# What pyarrow's number parsers accept (checked against pyarrow 26), so "skip" drops exactly the
# rows the fast path would have failed on.
_VALID_NUMBER = {
    "float": r"^\s*[+-]?((\d+\.?\d*|\.\d+)([eE][+-]?\d+)?|(?i:inf|infinity|nan))\s*$",
    "int": r"^\s*(-?\d+|0[xX][0-9a-fA-F]+)\s*$",
}
_BLOCK_SIZE = 16 << 20


@dataclass
class DelimitedTable:
    """A parsed file: the table, the rows skipped, and where each row came from."""

    table: pa.Table
    bad_rows: BadRowReport
    path: Path
    first_data_line: int
    lines: np.ndarray | None = None  # [n] physical line per row; None: first_data_line + row index

    def line_of(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return self.lines[rows] if self.lines is not None else self.first_data_line + rows


def read_header(path: Path, delimiter: str) -> list[str]:
    with open(path, "rb") as f:
        first = f.readline().decode("utf-8", errors="replace").rstrip("\r\n")
    return header_names(first, delimiter)


def header_names(line: str, delimiter: str) -> list[str]:
    """Column names of a header line; a name in double quotes (as Arrow and pandas write them) is unquoted."""
    names = line.split(delimiter)
    return [n[1:-1] if len(n) >= 2 and n[0] == n[-1] == '"' else n for n in names]


def read_delimited(
    path: str | Path,
    kinds: dict[str, Kind],
    *,
    delimiter: str,
    column_names: list[str] | None = None,
    skip_rows: int = 0,
    on_bad_rows: OnBadRows = "error",
) -> DelimitedTable:
    """Read the columns in ``kinds`` from a delimited file.

    Args:
        kinds: column -> ``category`` (read as string; empty = missing), ``float`` (float32) or ``int``.
        column_names: every column of a header-less file, in order; None: the first line is a header.
        skip_rows: lines to skip before the data when ``column_names`` is given (e.g. a typed header).
        on_bad_rows: ``error`` raises :class:`DataFormatError` at the first bad row; ``skip`` drops them.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise DataFormatError(path, None, None, "the file is empty")
    if column_names is None:
        header = read_header(path, delimiter)
        for column in kinds:
            if column not in header:
                raise DataFormatError(path, 1, column, "the schema names this column but the file header lacks it")
        names, first_line = header, 2
    else:
        names, first_line = column_names, 1 + skip_rows

    return _checked_nonempty(_parse(lambda: path, path, names, kinds, delimiter, first_line, first_line - 1, on_bad_rows))


def parse_block(
    data: bytes,
    path: Path,
    first_line: int,
    names: list[str],
    kinds: dict[str, Kind],
    *,
    delimiter: str,
    on_bad_rows: OnBadRows = "error",
) -> DelimitedTable:
    """Parse one block of whole lines of ``path`` (no header) whose first line is ``first_line``.

    The streaming readers cut a file into such blocks (:mod:`crossadapt.data.blocks`); bad rows are
    found and named exactly as by :func:`read_delimited`, with their physical line in the file.
    A block with no rows gives an empty table (the caller decides whether the file as a whole is empty).
    """
    return _parse(lambda: pa.BufferReader(data), path, names, kinds, delimiter, first_line, 0, on_bad_rows)


def _parse(source, path, names, kinds, delimiter, first_line, skip_rows, on_bad_rows) -> DelimitedTable:
    """Fast typed parse of ``source()`` (a path or a fresh reader); on any problem a one-thread re-read
    that finds every bad row and its physical line (pyarrow numbers lines from the start of the source)."""
    skipped: list[BadRow] = []
    line_offset = first_line - 1 - skip_rows

    def on_invalid(row: pcsv.InvalidRow) -> str:
        line = None if row.number is None or row.number < 0 else row.number + line_offset
        skipped.append(BadRow(line=line, reason=_count_reason(row), text=row.text[:200]))
        return "skip" if on_bad_rows == "skip" else "error"

    try:
        table = _read(source(), names, kinds, delimiter, skip_rows, on_invalid, threads=True, numbers=True)
        if not skipped:
            return DelimitedTable(table, BadRowReport(), path, first_line)
    except pa.ArrowInvalid:
        pass
    skipped.clear()
    return _read_slowly(source(), path, names, kinds, delimiter, skip_rows, on_invalid, first_line, skipped, on_bad_rows)


def _read_slowly(source, path, names, kinds, delimiter, skip_rows, on_invalid, first_line, skipped, on_bad_rows):
    """One-thread re-read with numbers as text, so every bad row is found with its line number."""
    try:
        table = _read(source, names, kinds, delimiter, skip_rows, on_invalid, threads=False, numbers=False)
    except pa.ArrowInvalid as exc:
        if skipped:
            raise DataFormatError(path, skipped[0].line, None, skipped[0].reason) from None
        raise DataFormatError(path, None, None, f"unreadable: {exc}") from None
    report = BadRowReport()
    report.add("wrong column count", skipped)
    lines = _physical_lines(first_line, table.num_rows, [r.line for r in skipped if r.line is not None])

    bad_any = np.zeros(table.num_rows, dtype=bool)
    first_bad: tuple[int, str, str] | None = None
    for column, kind in kinds.items():
        if kind == "category":
            continue
        text = table.column(column)
        bad = pc.and_(pc.is_valid(text), pc.invert(pc.match_substring_regex(text, _VALID_NUMBER[kind])))
        bad = bad.to_numpy(zero_copy_only=False)
        rows = np.flatnonzero(bad)
        if rows.size == 0:
            continue
        if first_bad is None or rows[0] < first_bad[0]:
            first_bad = (int(rows[0]), column, f"not a number: {text[int(rows[0])].as_py()!r}")
        examples = [BadRow(line=int(lines[r]), column=column, reason=f"not a number ({kind})") for r in rows[:20]]
        report.add(f"not a number in {column}", examples, count=int(np.count_nonzero(bad & ~bad_any)))
        bad_any |= bad
    if first_bad is not None and on_bad_rows == "error":
        row, column, reason = first_bad
        raise DataFormatError(path, int(lines[row]), column, reason)
    if bad_any.any():
        keep = ~bad_any
        table, lines = table.filter(pa.array(keep)), lines[keep]
    for column, kind in kinds.items():
        if kind != "category":
            idx = table.column_names.index(column)
            table = table.set_column(idx, column, pc.cast(table.column(column), _ARROW_TYPES[kind]))
    return DelimitedTable(table, report, path, first_line, lines)


def _read(source, names, kinds, delimiter, skip_rows, on_invalid, *, threads: bool, numbers: bool) -> pa.Table:
    """One pyarrow parse; ``numbers=False`` reads numeric columns as text (so conversion cannot fail)."""
    types = {c: _ARROW_TYPES[k] if numbers or k == "category" else pa.string() for c, k in kinds.items()}
    return pcsv.read_csv(
        source,
        read_options=pcsv.ReadOptions(use_threads=threads, block_size=_BLOCK_SIZE, column_names=names, skip_rows=skip_rows),
        parse_options=pcsv.ParseOptions(
            delimiter=delimiter, quote_char=False, ignore_empty_lines=False, invalid_row_handler=on_invalid
        ),
        convert_options=pcsv.ConvertOptions(
            column_types=types, include_columns=list(kinds), null_values=[""], strings_can_be_null=True,
            quoted_strings_can_be_null=True,
        ),
    )


def _physical_lines(first_line: int, rows: int, skipped_lines: list[int]) -> np.ndarray:
    """Line of each kept row: consecutive lines from ``first_line``, minus the skipped ones."""
    candidates = first_line + np.arange(rows + len(skipped_lines), dtype=np.int64)
    if skipped_lines:
        candidates = candidates[~np.isin(candidates, np.asarray(skipped_lines, dtype=np.int64))]
    return candidates[:rows]


def _count_reason(row: pcsv.InvalidRow) -> str:
    return f"expected {row.expected_columns} columns, got {row.actual_columns}"


def _checked_nonempty(result: DelimitedTable) -> DelimitedTable:
    if result.table.num_rows == 0:
        raise DataFormatError(result.path, None, None, "the file has no data rows")
    return result

