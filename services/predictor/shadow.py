"""Shadow scoring off the response's critical path: the other arm scores served rows in the background.

A request queues one `ShadowJob` per arm that has rows to shadow-score and returns at once. The
worker takes every job waiting (up to `batch_rows` rows), scores each arm's rows in one forward
(on the loop after the responses went out, or in a worker thread above `inline_rows` rows), and
writes the scores into the score log on the event loop. When more than
`max_pending_rows` rows wait, new shadow work is dropped (and counted), never the request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from services.predictor.arms import EncodedBatch, LoadedArm
from services.predictor.features import RequestColumns
from services.predictor.score_log import ScoreLog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowJob:
    """Rows of one request that `arm` scores in the shadow."""

    arm: LoadedArm
    seqs: np.ndarray  # the rows in the score log
    columns: RequestColumns
    rows: np.ndarray  # their positions in the request
    encoded: EncodedBatch | None  # their model input, when the serving arm's encoder is this arm's

    def __len__(self) -> int:
        return len(self.seqs)

    def model_input(self) -> EncodedBatch:
        return self.encoded if self.encoded is not None else self.arm.encoder.encode(self.columns, self.rows)


@dataclass(frozen=True)
class ShadowScores:
    arm: LoadedArm
    seqs: np.ndarray
    scores: np.ndarray
    unknown: np.ndarray


def score_jobs(jobs: list[ShadowJob]) -> list[ShadowScores]:
    """One forward per arm over all its waiting rows (runs in a worker thread)."""
    by_arm: dict[int, list[ShadowJob]] = {}
    for job in jobs:
        by_arm.setdefault(id(job.arm), []).append(job)
    results = []
    for group in by_arm.values():
        batch = EncodedBatch.concat([job.model_input() for job in group])
        results.append(ShadowScores(group[0].arm, np.concatenate([job.seqs for job in group]),
                                    group[0].arm.score(batch), batch.unknown))
    return results


class ShadowScorer:
    """The background worker and its bounded queue."""

    def __init__(self, score_log: ScoreLog, *, max_pending_rows: int, batch_rows: int, inline_rows: int,
                 on_scored: Callable[[ShadowScores], None], on_dropped: Callable[[int], None]) -> None:
        self.score_log = score_log
        self.max_pending_rows = max_pending_rows
        self.batch_rows = batch_rows
        self.inline_rows = inline_rows
        self.on_scored = on_scored
        self.on_dropped = on_dropped
        self._jobs: deque[ShadowJob] = deque()
        self._pending_rows = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending_rows(self) -> int:
        return self._pending_rows

    def submit(self, jobs: list[ShadowJob]) -> bool:
        """Queue a request's shadow work; False (and its rows settled) if the queue is full."""
        rows = sum(len(job) for job in jobs)
        if not rows:
            return True
        if self._pending_rows + rows > self.max_pending_rows:
            for job in jobs:
                self.score_log.settle(job.seqs)
            self.on_dropped(rows)
            return False
        self._jobs.extend(jobs)
        self._pending_rows += rows
        self._idle.clear()
        self._wakeup.set()
        return True

    async def run(self) -> None:
        """Score queued work until cancelled."""
        while True:
            if not self._jobs:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await asyncio.sleep(0)  # let the responses that queued this work go out first
            jobs, rows = [], 0
            while self._jobs and (not jobs or rows + len(self._jobs[0]) <= self.batch_rows):
                job = self._jobs.popleft()
                jobs.append(job)
                rows += len(job)
            try:
                results = score_jobs(jobs) if rows <= self.inline_rows else await asyncio.to_thread(score_jobs, jobs)
            except Exception:  # a failed shadow forward must not stop the worker or lose the rows' primary scores
                log.exception("shadow scoring failed", extra={"rows": rows})
                for job in jobs:
                    self.score_log.settle(job.seqs)
                self.on_dropped(rows)
            else:
                for result in results:
                    self.score_log.fill_shadow(result.seqs, result.arm.arm, result.scores, result.arm.generation,
                                               result.unknown)
                    self.on_scored(result)
            finally:
                self._pending_rows -= rows

    async def drain(self, timeout: float) -> bool:
        """Wait until the queue is empty (True) or `timeout` passes (False)."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True
