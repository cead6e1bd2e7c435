"""Errors and bad-row accounting shared by every reader.

A reader either stops at the first bad row with a :class:`DataFormatError` that names the file,
the line and the column, or (``on_bad_rows="skip"``) drops the row and counts it in a
:class:`BadRowReport`, which ends up in the prepared dataset's manifest.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OnBadRows = Literal["error", "skip"]

#: How many skipped rows the report keeps verbatim (the count is always exact).
MAX_BAD_ROW_EXAMPLES = 20


class DataFormatError(ValueError):
    """Input data that cannot be read as the schema says.

    Attributes:
        path: the file (``None`` for an in-memory table).
        line: 1-based physical line in the file (the header, if any, is line 1), or ``None``.
        column: the column's name, or ``None`` when the problem is the row as a whole.
        reason: what is wrong, in words.
    """

    def __init__(self, path: str | Path | None, line: int | None, column: str | None, reason: str):
        self.path = None if path is None else str(path)
        self.line = line
        self.column = column
        self.reason = reason
        where = self.path or "<table>"
        if line is not None:
            where += f", line {line}"
        if column is not None:
            where += f", column {column!r}"
        super().__init__(f"{where}: {reason}")


class BadRow(BaseModel):
    """One skipped row: where it was and why."""

    model_config = ConfigDict(extra="forbid")

    line: int | None = Field(description="1-based physical line, or None when unknown.")
    column: str | None = None
    reason: str
    text: str | None = Field(None, description="The raw row (first 200 characters), where known.")


class BadRowReport(BaseModel):
    """Rows dropped under ``on_bad_rows="skip"``: an exact count, a count per reason, examples."""

    model_config = ConfigDict(extra="forbid")

    skipped: int = 0
    by_reason: dict[str, int] = Field(default_factory=dict)
    examples: list[BadRow] = Field(default_factory=list)

    def add(self, reason_key: str, rows: list[BadRow], count: int | None = None) -> None:
        """Count ``count`` (default ``len(rows)``) skipped rows under ``reason_key``; keep a few examples."""
        count = len(rows) if count is None else count
        if count == 0:
            return
        self.skipped += count
        self.by_reason[reason_key] = self.by_reason.get(reason_key, 0) + count
        room = MAX_BAD_ROW_EXAMPLES - len(self.examples)
        self.examples.extend(rows[: max(room, 0)])

    def merge(self, other: "BadRowReport") -> None:
        for key, count in other.by_reason.items():
            self.by_reason[key] = self.by_reason.get(key, 0) + count
        self.skipped += other.skipped
        room = MAX_BAD_ROW_EXAMPLES - len(self.examples)
        self.examples.extend(other.examples[: max(room, 0)])
