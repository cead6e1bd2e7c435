"""Shadow scoring off the response's critical path: the other arm scores served rows in the background.

A request queues one `ShadowJob` per arm that has rows to shadow-score and returns at once. The
worker lets work coalesce across requests: it starts when `min_rows` rows wait or the oldest job has
waited `max_delay_s` (or `drain` asks), so small requests cost one forward per many requests, not
one each. It then takes every job waiting (up to `batch_rows` rows) and scores them in chunks of
`chunk_jobs` jobs (each arm's rows of a chunk in one forward), on the loop after the
responses went out, letting the requests that arrived meanwhile go first between chunks (a
request waits for one chunk, not for a whole batch), or in a worker thread above `inline_rows`
rows; the scores go into the score log on the event loop. When more than `max_pending_rows` rows
wait, new shadow work is dropped (and counted), never the request.
"""

from __future__ import annotations

import asyncio
import contextlib
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
                 on_scored: Callable[[ShadowScores], None], on_dropped: Callable[[int], None],
                 min_rows: int = 1, max_delay_s: float = 0.0, chunk_jobs: int | None = None) -> None:
        self.score_log = score_log
        self.max_pending_rows = max_pending_rows
        self.batch_rows = batch_rows
        self.chunk_jobs = chunk_jobs or batch_rows
        self.inline_rows = inline_rows
        self.min_rows = min_rows
        self.max_delay_s = max_delay_s
        self.on_scored = on_scored
        self.on_dropped = on_dropped
        self._jobs: deque[ShadowJob] = deque()
        self._pending_rows = 0
        self._oldest_at = 0.0  # loop time the oldest waiting job was queued
        self._submitted = 0  # rows queued so far (all time)
        self._settled = 0  # rows of those scored or given up
        self._urgent_until = 0  # score without waiting until `_settled` reaches this (a drain asked)
        self._wakeup = asyncio.Event()
        self._progress = asyncio.Event()

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
        if not self._jobs:
            self._oldest_at = asyncio.get_running_loop().time()
            self._wakeup.set()  # the worker starts the oldest job's clock
        self._jobs.extend(jobs)
        self._pending_rows += rows
        self._submitted += rows
        if self._pending_rows >= self.min_rows:
            self._wakeup.set()
        return True

    async def run(self) -> None:
        """Score queued work until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            if not self._jobs:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            wait = self._oldest_at + self.max_delay_s - loop.time()
            if self._pending_rows < self.min_rows and self._urgent_until <= self._settled and wait > 0:
                self._wakeup.clear()  # set again by enough rows or a drain
                with contextlib.suppress(TimeoutError):  # the oldest job's wait is over: score what is there
                    await asyncio.wait_for(self._wakeup.wait(), wait)
                continue
            await asyncio.sleep(0)  # let the responses that queued this work go out first
            jobs, rows = [], 0
            while self._jobs and (not jobs or rows + len(self._jobs[0]) <= self.batch_rows):
                job = self._jobs.popleft()
                jobs.append(job)
                rows += len(job)
            self._oldest_at = loop.time()  # what is left waits at most one more period
            for index, chunk in enumerate(self._chunks(jobs)):
                if index:
                    await asyncio.sleep(0)  # requests that arrived during the last chunk go first
                await self._score(chunk)

    def _chunks(self, jobs: list[ShadowJob]) -> list[list[ShadowJob]]:
        """Consecutive jobs in groups of at most `chunk_jobs`. A chunk's time is its jobs' Python work
        plus its forwards, so the count of jobs bounds it; large jobs (few to a batch) keep their forwards large."""
        return [jobs[start:start + self.chunk_jobs] for start in range(0, len(jobs), self.chunk_jobs)]

    async def _score(self, jobs: list[ShadowJob]) -> None:
        """Score the jobs (in a worker thread above `inline_rows` rows) and keep their scores."""
        rows = sum(len(job) for job in jobs)
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
            self._settled += rows
            self._progress.set()

    async def drain(self, timeout: float) -> bool:
        """Score every row queued so far now (no coalescing wait); True once done, False if `timeout` passes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        target = self._submitted
        self._urgent_until = max(self._urgent_until, target)
        self._wakeup.set()
        while self._settled < target:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                return False
        return True
