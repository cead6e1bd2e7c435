"""The stall watchdog: an operation whose work was lost is re-sent, or failed saying so.

Celery loses a chain when its broker or result backend goes away at the wrong moment: a task whose
connection drops while it acknowledges, stores its result or counts a chord part fails *outside* the
task body, no `on_failure` runs, the next step is never sent, and the operation would stay RUNNING
forever. Every server therefore runs a watchdog over the operations of its own kinds:

* an operation is **stalled** when it is not terminal and shows no sign of life for `stall_s`: no
  record change (stage, details, a long task's lease heartbeat) and no progress beat (every
  `set_progress` and every task start write one, `OperationStore.last_beat`);
* a stalled operation is re-sent from the stage its record names (each service's `Resender`; its
  stages are idempotent, so a copy that was not lost after all only repeats work), at most
  `stall_max_resends` times; the claim is an atomic update that only succeeds if the record is still
  the stalled one, so two replicas never re-send the same stall twice;
* after that it fails with UNAVAILABLE, naming the stall, the stage and the re-sends, and its
  service's `discard` removes unpublished outputs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from services.common.errors import PlatformError, UnavailableError
from services.common.operations import OperationRecord, OperationStore

log = logging.getLogger(__name__)

#: Sends an operation's remaining work again, from the stage its record names.
Resender = Callable[[OperationRecord], None]


@dataclass
class StallWatchdog:
    """Finds stalled operations of the kinds it knows and re-sends (then fails) them; see the module docstring."""

    store: OperationStore
    resenders: dict[str, Resender]  # kind -> how to re-send it
    stall_s: float
    max_resends: int
    discards: dict[str, Callable[[OperationRecord], None]] = field(default_factory=dict)
    clock: Callable[[], float] = time.time

    @property
    def interval_s(self) -> float:
        """How often `run` checks: a stall is noticed at most a quarter of `stall_s` late (and at least every 30 s)."""
        return min(max(self.stall_s / 4, 0.2), 30.0)

    def check(self) -> list[tuple[str, str]]:
        """One pass over the store; returns (operation id, "resent" | "failed") for what it acted on."""
        actions = []
        for operation_id in self.store.list_ids():
            try:
                record = self.store.get(operation_id)
                if record.terminal or record.kind not in self.resenders:
                    continue
                if self.clock() - self.store.last_activity(record) < self.stall_s:
                    continue
                action = self._act(record)
            except PlatformError:  # expired or removed meanwhile
                continue
            if action:
                actions.append((operation_id, action))
        return actions

    def _act(self, stalled: OperationRecord) -> str | None:
        silent_s = self.clock() - self.store.last_activity(stalled)
        if stalled.resends >= self.max_resends:
            error = UnavailableError(
                f"operation stalled: no progress for {silent_s:.0f} s in stage {stalled.stage or 'pending'!r} "
                f"after {stalled.resends} re-send(s) of its work (stall_s={self.stall_s:g})", field="operation_id")
            failed = self._claim(stalled, lambda r: r.failed(error))
            if failed is None:
                return None
            log.error("stalled operation failed", extra={"operation_id": stalled.id, "stage": stalled.stage,
                                                         "resends": stalled.resends})
            discard = self.discards.get(stalled.kind)
            if discard is not None:
                try:
                    discard(failed)
                except Exception:  # unpublished files are invisible without a manifest
                    log.exception("discard failed", extra={"operation_id": stalled.id})
            return "failed"
        claimed = self._claim(stalled, lambda r: r.model_copy(update={"resends": r.resends + 1}))
        if claimed is None:
            return None
        log.warning("operation stalled; re-sending its work", extra={
            "operation_id": stalled.id, "stage": stalled.stage, "silent_s": round(silent_s, 1),
            "resend": claimed.resends})
        try:
            self.resenders[stalled.kind](claimed)
        except Exception:  # the broker is still away: the claim restarted the clock; the next stall re-sends
            log.exception("re-send failed", extra={"operation_id": stalled.id})
        return "resent"

    def _claim(self, stalled: OperationRecord,
               change: Callable[[OperationRecord], OperationRecord]) -> OperationRecord | None:
        """Apply `change` only if the record is still the stalled one (no worker, no other replica moved it)."""
        applied: list[OperationRecord] = []

        def mutate(current: OperationRecord) -> OperationRecord | None:
            if current.terminal or current.updated_at != stalled.updated_at or current.resends != stalled.resends:
                return None
            applied.append(change(current))
            return applied[-1]

        record = self.store.update(stalled.id, mutate)
        return record if applied else None

    async def run(self, stop: asyncio.Event) -> None:
        """Check every `interval_s` until `stop` is set (a failed pass, e.g. Redis away, is retried next time)."""
        while not stop.is_set():
            try:
                await asyncio.to_thread(self.check)
            except Exception:
                log.warning("stall check failed; retrying", exc_info=True)
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)
            except TimeoutError:
                continue
