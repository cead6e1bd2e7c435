"""Batches from ``SplitArrays`` without per-row Python.

In order, a batch is a contiguous slice (``torch.from_numpy`` on a view). Shuffled, one
permutation of all rows is drawn per call; rows are gathered with one fancy index per chunk of
several batches (fewer, larger reads from the memory map), then sliced into batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from crossadapt.data.arrays import SplitArrays
from crossadapt.data.batch import Batch

#: Rows gathered per fancy-index call when shuffling (rounded up to whole batches).
SHUFFLE_CHUNK_ROWS = 1 << 18


def iter_batches(
    arrays: SplitArrays, batch_size: int, *, shuffle: bool = False, seed: int = 0, drop_last: bool = False
) -> Iterator[Batch]:
    """Yield ``Batch``es of ``batch_size`` rows (the last may be shorter unless ``drop_last``).

    Every row appears exactly once per call. For another order each epoch, pass ``seed + epoch``.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    rows = len(arrays)
    stop = rows - rows % batch_size if drop_last else rows
    if not shuffle:
        for start in range(0, stop, batch_size):
            yield arrays.slice(start, min(start + batch_size, stop)).to_batch()
        return
    order = np.random.default_rng(seed).permutation(rows)[:stop]
    chunk = max(batch_size, (SHUFFLE_CHUNK_ROWS // batch_size) * batch_size)
    for chunk_start in range(0, stop, chunk):
        gathered = arrays.take(order[chunk_start : chunk_start + chunk])
        for start in range(0, len(gathered), batch_size):
            yield gathered.slice(start, start + batch_size).to_batch()
