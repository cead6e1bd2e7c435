"""The kept scores: every served row with both arms' scores, its label when it arrives, in a ring.

Rows get consecutive sequence numbers; row ``seq`` lives in slot ``seq % capacity`` until a newer
row overwrites it. Per row: its id (for the label join), request id, time, served arm, cohort
bucket, each arm's score (NaN until scored), the generation of the arm that scored it (so figures
never mix two checkpoints of one arm), unknown values per arm, the label (NaN until fed back), and
whether a shadow score is still pending. Every write is a vectorised slice assignment; the row-id
index is a dict filled and read through C-level `map`/`zip`, never a Python loop over rows.

All methods run on the server's event loop (one thread); figures and flushes work on copies.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from itertools import repeat

import numpy as np

from services.predictor.arms import STUDENT, TEACHER

ARM_COLUMN = {TEACHER: 0, STUDENT: 1}


@dataclass(frozen=True)
class KeptRows:
    """A copy of some kept rows (columns as in `ScoreLog`), for figures and the exposure log."""

    seq: np.ndarray
    row_id: np.ndarray
    request_id: np.ndarray
    scored_at: np.ndarray
    served: np.ndarray
    bucket: np.ndarray
    score: np.ndarray  # [n, 2] teacher, student
    generation: np.ndarray  # [n, 2]
    unknown: np.ndarray  # [n, 2]
    label: np.ndarray

    def __len__(self) -> int:
        return len(self.seq)


class ScoreLog:
    """A ring of the last `capacity` served rows."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.row_id = np.empty(capacity, dtype=object)
        self.request_id = np.empty(capacity, dtype=object)
        self.scored_at = np.zeros(capacity, dtype=np.float64)
        self.served = np.zeros(capacity, dtype=np.int8)
        self.bucket = np.zeros(capacity, dtype=np.int32)
        self.score = np.full((capacity, 2), np.nan, dtype=np.float32)
        self.generation = np.zeros((capacity, 2), dtype=np.int32)
        self.unknown = np.zeros((capacity, 2), dtype=np.int32)
        self.label = np.full(capacity, np.nan, dtype=np.float32)
        self.shadow_pending = np.zeros(capacity, dtype=bool)
        self.head = 0  # the next row's sequence number
        self.flushed = 0  # rows before this were written to the exposure log (or lost)
        self.lost_before_flush = 0  # rows overwritten before they were flushed
        self.label_updates = 0  # feedback calls that matched a row
        self._index: dict[str, int] = {}

    @property
    def oldest(self) -> int:
        return max(0, self.head - self.capacity)

    def _slots(self, seqs: np.ndarray) -> np.ndarray:
        return seqs % self.capacity

    def append(self, *, row_ids: np.ndarray, request_id: str, now: float, served: np.ndarray, bucket: np.ndarray,
               primary_scores: np.ndarray, generations: tuple[int, int], unknown: np.ndarray,
               shadow_pending: np.ndarray) -> np.ndarray:
        """Keep a request's rows; returns their sequence numbers.

        Args:
            row_ids: ``[B]`` object array of str. served: ``[B]`` arm codes. primary_scores: ``[B]`` the
            served arm's scores. generations: the (teacher, student) generations of the request's arms.
            unknown: ``[B, 2]`` unknown values per arm. shadow_pending: ``[B]`` rows the other arm will score.
        """
        count = len(row_ids)
        seqs = np.arange(self.head, self.head + count, dtype=np.int64)
        if self.head + count > self.capacity:  # rows are overwritten
            self._evict(seqs)
        start = self.head % self.capacity
        # The rows' slots: one slice unless they wrap around the ring's end (a slice writes without an index array).
        slots = slice(start, start + count) if start + count <= self.capacity else self._slots(seqs)
        self.row_id[slots] = row_ids
        self.request_id[slots] = request_id
        self.scored_at[slots] = now
        self.served[slots] = served
        self.bucket[slots] = bucket
        scores = np.full((count, 2), np.nan, dtype=np.float32)
        scores[np.arange(count), (served == STUDENT).astype(np.int64)] = primary_scores
        self.score[slots] = scores
        self.generation[slots] = generations
        self.unknown[slots] = unknown
        self.label[slots] = np.nan
        self.shadow_pending[slots] = shadow_pending
        self._index.update(zip(row_ids.tolist(), seqs.tolist()))
        self.head += count
        return seqs

    def _evict(self, seqs: np.ndarray) -> None:
        """Drop the rows the new ones overwrite from the index (unless a newer row reused the id)."""
        old = seqs - self.capacity
        old = old[old >= 0]
        if not len(old):
            return
        unflushed = int((old >= self.flushed).sum())
        if unflushed:
            self.lost_before_flush += unflushed
            self.flushed = int(old[-1]) + 1
        ids = self.row_id[self._slots(old)]
        current = np.fromiter(map(self._index.get, ids.tolist(), repeat(-1)), dtype=np.int64, count=len(ids))
        stale = ids[current == old]
        deque(map(self._index.pop, stale.tolist()), maxlen=0)

    def fill_shadow(self, seqs: np.ndarray, arm: int, scores: np.ndarray, generation: int,
                    unknown: np.ndarray) -> int:
        """Record the other arm's scores of rows (those still kept); returns how many were recorded."""
        alive = seqs >= self.oldest
        slots = self._slots(seqs[alive])
        column = ARM_COLUMN[arm]
        self.score[slots, column] = scores[alive]
        self.generation[slots, column] = generation
        self.unknown[slots, column] = unknown[alive]
        self.shadow_pending[slots] = False
        return int(alive.sum())

    def settle(self, seqs: np.ndarray) -> None:
        """Rows whose shadow score will not come (dropped): no longer pending."""
        self.shadow_pending[self._slots(seqs[seqs >= self.oldest])] = False

    def settle_all(self) -> None:
        self.shadow_pending[:] = False

    def add_labels(self, row_ids: list[str], labels: np.ndarray) -> tuple[int, int]:
        """Join labels to kept rows by row id; returns (matched, unknown)."""
        seqs = np.fromiter(map(self._index.get, row_ids, repeat(-1)), dtype=np.int64, count=len(row_ids))
        found = seqs >= self.oldest
        self.label[self._slots(seqs[found])] = labels[found]
        matched = int(found.sum())
        self.label_updates += bool(matched)
        return matched, len(row_ids) - matched

    def _copy(self, seqs: np.ndarray) -> KeptRows:
        slots = self._slots(seqs)
        return KeptRows(seq=seqs, row_id=self.row_id[slots], request_id=self.request_id[slots],
                        scored_at=self.scored_at[slots], served=self.served[slots], bucket=self.bucket[slots],
                        score=self.score[slots], generation=self.generation[slots], unknown=self.unknown[slots],
                        label=self.label[slots])

    def since(self, cutoff: float) -> KeptRows:
        """A copy of the kept rows scored at or after `cutoff` (unix seconds)."""
        seqs = np.arange(self.oldest, self.head, dtype=np.int64)
        return self._copy(seqs[self.scored_at[self._slots(seqs)] >= cutoff])

    def take_complete(self, limit: int | None = None) -> KeptRows:
        """A copy of the unflushed rows up to the first one still waiting for its shadow score, marked flushed."""
        start = max(self.flushed, self.oldest)
        seqs = np.arange(start, self.head, dtype=np.int64)
        pending = np.flatnonzero(self.shadow_pending[self._slots(seqs)])
        stop = int(seqs[pending[0]]) if len(pending) else self.head
        if limit is not None:
            stop = min(stop, start + limit)
        self.flushed = stop
        return self._copy(np.arange(start, stop, dtype=np.int64))

    @property
    def pending_flush(self) -> int:
        return self.head - max(self.flushed, self.oldest)
