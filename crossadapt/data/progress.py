"""Progress of long data work: a bar with rows and MB/s (rich, on stderr), or nothing.

The library reports through a :class:`Progress`; ``crossadapt data prepare`` shows a :class:`BarProgress`
unless ``--quiet``, and library callers get :class:`NoProgress` by default.

Example::

    with progress.stage("reading", total_bytes=source.total_bytes) as update:
        for table in source:
            ...
            update(rows=rows_so_far, done_bytes=source.bytes_done)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress as RichProgress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.text import Text

Update = Callable[..., None]


class Progress:
    """No output; subclasses draw. ``stage`` yields ``update(rows=..., done_bytes=...)`` (cumulative)."""

    @contextmanager
    def stage(self, description: str, *, total_rows: int | None = None, total_bytes: int | None = None) -> Iterator[Update]:
        yield lambda **_: None


NoProgress = Progress


class _RateColumn(ProgressColumn):
    """``1,234,567 rows  312,345 rows/s  88.1 MB/s``."""

    def render(self, task: Task) -> Text:
        rows = task.fields.get("rows", 0)
        seconds = task.elapsed or 0.0
        text = f"{rows:,} rows"
        if seconds > 0:
            text += f"  {rows / seconds:,.0f} rows/s"
            if task.fields.get("bytes_total"):
                text += f"  {task.fields.get('bytes', 0) / seconds / 2**20:,.1f} MB/s"
        return Text(text)


class BarProgress(Progress):
    """A rich bar per stage on ``console`` (default: stderr), refreshed a few times a second."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)

    @contextmanager
    def stage(self, description: str, *, total_rows: int | None = None, total_bytes: int | None = None) -> Iterator[Update]:
        columns = (TextColumn("{task.description:<10}"), BarColumn(), _RateColumn(), TimeElapsedColumn())
        with RichProgress(*columns, console=self.console, transient=False, refresh_per_second=4) as bar:
            total = total_bytes if total_bytes else total_rows
            task = bar.add_task(description, total=total, rows=0, bytes=0, bytes_total=total_bytes)

            def update(rows: int | None = None, done_bytes: int | None = None) -> None:
                fields = {}
                if rows is not None:
                    fields["rows"] = rows
                if done_bytes is not None:
                    fields["bytes"] = done_bytes
                completed = done_bytes if total_bytes else rows
                bar.update(task, completed=completed, **fields)

            yield update
            if total:
                bar.update(task, completed=total)
