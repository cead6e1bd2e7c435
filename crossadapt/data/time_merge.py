"""The output order of a streamed dataset: blocks of rows in time order, cut at the split boundaries.

Each spilled run is sorted by time (stable: equal times keep file order). When the runs follow
one another (no time column, or a file already in time order: Criteo's day files, Avazu) the output is
the file order and a block is a slice of one run. Otherwise the runs are merged: the next
block is the ``B`` smallest remaining keys ``(time, run, row)`` across all runs, found by a binary
search on the time over the runs' (memory-mapped) sorted times, so the merge keeps only the block in
memory. Reading a block's slices in run order and sorting them stably by time gives exactly the
order of a stable in-memory sort of the whole file.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from crossadapt.data.spill import SpilledRows

DEFAULT_BLOCK_ROWS = 1 << 20


@dataclass(frozen=True)
class Block:
    """Rows of one split: ``slices`` (run, start, stop) in run order; ``merge``: sort them by time."""

    split: str
    slices: tuple[tuple[int, int, int], ...]
    merge: bool

    @property
    def rows(self) -> int:
        return sum(stop - start for _, start, stop in self.slices)


def plan_blocks(spilled: SpilledRows, splits: list[tuple[str, int]], block_rows: int = DEFAULT_BLOCK_ROWS) -> list[Block]:
    """Blocks of at most ``block_rows`` rows covering ``splits`` ((name, rows) in time order) in time order."""
    if sum(rows for _, rows in splits) != spilled.rows:
        raise ValueError(f"the splits cover {sum(r for _, r in splits)} rows, the data has {spilled.rows}")
    if spilled.time_sorted:
        return list(_sequential(spilled, splits, block_rows))
    return list(_merged(spilled, splits, block_rows))


def prefix_rows(blocks: list[Block], runs: int, rows: int) -> np.ndarray:
    """``[runs]`` rows of each run among the first ``rows`` output rows (``rows`` ends a block)."""
    taken = np.zeros(runs, dtype=np.int64)
    position = 0
    for block in blocks:
        if position >= rows:
            break
        for run, _, stop in block.slices:
            taken[run] = stop
        position += block.rows
    if position != rows and rows < sum(b.rows for b in blocks):
        raise ValueError(f"{rows} does not end a block (the blocks are cut at the split boundaries)")
    return taken


def _sequential(spilled: SpilledRows, splits: list[tuple[str, int]], block_rows: int) -> Iterator[Block]:
    """File order: blocks are the pieces of runs cut at split boundaries (and at ``block_rows``), so a
    block is one contiguous slice of one run and is read without concatenation."""
    run, offset = 0, 0
    sizes = [c.rows for c in spilled.runs]
    for split, rows in splits:
        left = rows
        while left > 0:
            take = min(block_rows, left, sizes[run] - offset)
            yield Block(split, ((run, offset, offset + take),), merge=False)
            left -= take
            offset += take
            if offset == sizes[run]:
                run, offset = run + 1, 0
        if rows == 0:
            yield Block(split, (), merge=False)


def _merged(spilled: SpilledRows, splits: list[tuple[str, int]], block_rows: int) -> Iterator[Block]:
    times = [spilled.timestamps(j) for j in range(len(spilled.runs))]
    cursor = np.zeros(len(times), dtype=np.int64)
    try:
        for split, rows in splits:
            left = rows
            while left > 0:
                want = min(block_rows, left)
                stop = _next_stops(times, cursor, want)
                slices = tuple((j, int(cursor[j]), int(stop[j])) for j in range(len(times)) if stop[j] > cursor[j])
                yield Block(split, slices, merge=len(slices) > 1)
                cursor, left = stop, left - want
            if rows == 0:
                yield Block(split, (), merge=False)
    finally:
        del times  # unmap


def _next_stops(times: list[np.ndarray], cursor: np.ndarray, want: int) -> np.ndarray:
    """Per run, where the next ``want`` smallest keys (time, run, row) end."""
    live = [j for j, t in enumerate(times) if cursor[j] < len(t)]
    lo = min(int(times[j][cursor[j]]) for j in live)
    hi = max(int(times[j][-1]) for j in live)

    def at_most(t: int) -> int:
        return sum(max(int(np.searchsorted(times[j], t, "right")) - int(cursor[j]), 0) for j in live)

    while lo < hi:  # the smallest time t with at least `want` remaining rows at or before t
        mid = lo + (hi - lo) // 2
        if at_most(mid) >= want:
            hi = mid
        else:
            lo = mid + 1
    stop = cursor.copy()
    need = want
    for j in live:  # rows before t all go; rows at t go in run order until `want` is reached
        stop[j] = max(int(np.searchsorted(times[j], lo, "left")), int(cursor[j]))
        need -= int(stop[j] - cursor[j])
    for j in live:
        if need == 0:
            break
        ties = max(int(np.searchsorted(times[j], lo, "right")), int(cursor[j])) - int(stop[j])
        take = min(need, ties)
        stop[j] += take
        need -= take
    return stop
