"""The stall watchdog over operation records (files and Redis): re-send a stalled operation from its
stage a bounded number of times, then fail it naming the stall; live, terminal and foreign operations
are left alone; a progress beat is a sign of life; two replicas never re-send one stall twice."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from services.common.operations import FileOperationStore, OperationRecord, OperationState, OperationStore, RedisOperationStore
from services.common.watchdog import StallWatchdog

STALL_S = 0.5


@pytest.fixture(params=["files", "redis"])
def operations(request: pytest.FixtureRequest, tmp_path: Path) -> OperationStore:
    if request.param == "files":
        return FileOperationStore(tmp_path / "ops")
    return RedisOperationStore(f"{request.getfixturevalue('redis_server').url}/4")


def _running(store: OperationStore, kind: str = "projection", stage: str = "apply") -> OperationRecord:
    record = OperationRecord(id=uuid.uuid4().hex, kind=kind, state=OperationState.RUNNING, stage=stage)
    assert store.create(record)
    return record


def test_a_stalled_operation_is_resent_from_its_stage_then_failed_naming_the_stall(operations) -> None:  # noqa: ANN001
    sent: list[tuple[str, str, int]] = []
    discarded: list[str] = []
    stalled, live, done = _running(operations), _running(operations), _running(operations)
    operations.transition(done.id, {OperationState.RUNNING}, state=OperationState.SUCCEEDED)
    foreign = _running(operations, kind="sampling")
    watchdog = StallWatchdog(operations, {"projection": lambda r: sent.append((r.id, r.stage, r.resends))},
                             stall_s=STALL_S, max_resends=2, discards={"projection": lambda r: discarded.append(r.id)})
    assert watchdog.check() == []  # nothing is silent for STALL_S yet

    for resend in (1, 2, 3):
        time.sleep(STALL_S + 0.05)
        operations.set_progress(live.id, "apply:a:00000", 0.1 * resend)  # a live one keeps beating
        if resend <= 2:
            assert watchdog.check() == [(stalled.id, "resent")]
            assert sent[-1] == (stalled.id, "apply", resend) and operations.get(stalled.id).resends == resend
            assert watchdog.check() == []  # the re-send restarted its clock
    assert watchdog.check() == [(stalled.id, "failed")]
    record = operations.get(stalled.id)
    assert record.state == OperationState.FAILED and record.error["type"] == "UnavailableError"
    assert "stalled" in record.error["message"] and "'apply'" in record.error["message"]
    assert "after 2 re-send" in record.error["message"]
    assert discarded == [stalled.id] and len(sent) == 2
    assert operations.get(live.id).resends == 0 and operations.get(live.id).state == OperationState.RUNNING
    assert operations.get(done.id).state == OperationState.SUCCEEDED and operations.get(foreign.id).resends == 0


def test_replicas_resend_one_stall_once(operations) -> None:  # noqa: ANN001
    stalled = _running(operations)
    sent: list[str] = []
    replicas = [StallWatchdog(operations, {"projection": lambda r: sent.append(r.id)}, stall_s=STALL_S, max_resends=3)
                for _ in range(2)]
    time.sleep(STALL_S + 0.05)
    seen = operations.get(stalled.id)  # both replicas found the same stall
    assert replicas[0]._act(seen) == "resent"
    assert replicas[1]._act(seen) is None
    assert sent == [stalled.id] and operations.get(stalled.id).resends == 1
