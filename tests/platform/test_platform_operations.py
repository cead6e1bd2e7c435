"""Operation records on files and on Redis: atomic updates, sticky terminal states, per-unit progress."""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest

from services.common.errors import DataLossError, NotFoundError
from services.common.operations import (
    FileOperationStore,
    OperationRecord,
    OperationState,
    OperationStore,
    RedisOperationStore,
)


@pytest.fixture(params=["files", "redis"])
def operations(request: pytest.FixtureRequest, tmp_path: Path) -> OperationStore:
    if request.param == "files":
        return FileOperationStore(tmp_path / "ops")
    redis_server = request.getfixturevalue("redis_server")
    return RedisOperationStore(f"{redis_server.url}/3")


def _new(store: OperationStore, units: int = 4) -> OperationRecord:
    record = OperationRecord(id=uuid.uuid4().hex, kind="projection", units=units, params={"count": 0})
    assert store.create(record)
    return record


def test_create_get_and_duplicate_ids(operations: OperationStore) -> None:
    record = _new(operations)
    assert operations.get(record.id) == record
    assert not operations.create(record.model_copy(update={"kind": "other"}))
    assert operations.get(record.id).kind == "projection"
    assert record.id in operations.list_ids()
    for bad in ["0" * 32, "../../etc/passwd", ""]:
        with pytest.raises(NotFoundError):
            operations.get(bad)


def test_terminal_states_are_sticky(operations: OperationStore) -> None:
    record = _new(operations)
    running = operations.transition(record.id, {OperationState.PENDING}, state=OperationState.RUNNING)
    assert running is not None and running.state == OperationState.RUNNING and running.updated_at >= record.updated_at
    assert operations.transition(record.id, {OperationState.RUNNING}, state=OperationState.SUCCEEDED) is not None
    assert operations.fail(record.id, DataLossError("late failure")) is None
    assert operations.get(record.id).state == OperationState.SUCCEEDED and operations.get(record.id).error is None
    other = _new(operations)
    failed = operations.fail(other.id, DataLossError("bad shard", field="tables/x"))
    assert failed.state == OperationState.FAILED and failed.error["field"] == "tables/x"


def test_concurrent_updates_lose_nothing(operations: OperationStore) -> None:
    record = _new(operations)

    def bump() -> None:
        for _ in range(10):
            operations.update(record.id, lambda r: r.model_copy(update={"params": {"count": r.params["count"] + 1}}))

    threads = [threading.Thread(target=bump) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert operations.get(record.id).params["count"] == 40


def test_progress_is_the_mean_of_unit_fractions(operations: OperationStore) -> None:
    record = _new(operations, units=4)
    assert operations.progress(record) == 0.0
    operations.set_progress(record.id, "apply:user:00000", 1.0)
    operations.set_progress(record.id, "apply:user:00001", 0.5)
    assert operations.progress(operations.get(record.id)) == pytest.approx(0.375)
    done = operations.transition(record.id, {OperationState.PENDING}, state=OperationState.SUCCEEDED)
    assert operations.progress(done) == 1.0
    assert [operations.count_attempt(record.id, "apply:user:00000") for _ in range(3)] == [1, 2, 3]


@pytest.fixture(params=["files", "redis"])
def short_lived(request: pytest.FixtureRequest, tmp_path: Path) -> OperationStore:
    """A store whose records expire after 1.5 s."""
    if request.param == "files":
        return FileOperationStore(tmp_path / "ops", ttl_s=1.5)
    redis_server = request.getfixturevalue("redis_server")
    return RedisOperationStore(f"{redis_server.url}/4", ttl_s=1.5)


def test_records_expire_after_their_ttl_and_updates_keep_it(short_lived: OperationStore) -> None:
    import time

    record = _new(short_lived)
    short_lived.set_progress(record.id, "unit-0", 0.5)
    short_lived.count_attempt(record.id, "unit-0")
    time.sleep(0.8)
    short_lived.transition(record.id, {OperationState.PENDING}, state=OperationState.RUNNING)  # must not renew it
    assert record.id in short_lived.list_ids()
    time.sleep(1.0)
    assert record.id not in short_lived.list_ids()
    with pytest.raises(NotFoundError):
        short_lived.get(record.id)
    if isinstance(short_lived, RedisOperationStore):  # side keys go with the record
        assert short_lived.redis.exists(short_lived._key(record.id, ":progress"), short_lived._key(record.id, ":attempts")) == 0


def test_ttl_comes_from_the_settings(tmp_path: Path) -> None:
    from services.common.operations import open_operation_store
    from services.common.settings import PlatformSettings

    store = open_operation_store(PlatformSettings(home=tmp_path, operation_ttl_s=42.0))
    assert isinstance(store, FileOperationStore) and store.ttl_s == 42.0
    assert PlatformSettings(home=tmp_path).operation_ttl_s == 7 * 24 * 3600


def test_concurrent_creates_of_one_id_make_exactly_one_record_with_its_index(operations: OperationStore) -> None:
    """Record and index are created together: one creator wins, and the id is listed exactly when it exists."""
    record = OperationRecord(id=uuid.uuid4().hex, kind="projection")
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def create(kind: str) -> None:
        barrier.wait()
        results.append(operations.create(record.model_copy(update={"kind": kind})))

    threads = [threading.Thread(target=create, args=(f"k{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    assert operations.list_ids().count(record.id) == 1
    assert operations.get(record.id).kind in {f"k{i}" for i in range(8)}


def test_operations_gauge_counts_an_operation_made_right_after_registration(tmp_path: Path) -> None:
    """Registering the collector must not cache an empty count (scrapes right after start saw nothing)."""
    from prometheus_client import CollectorRegistry, generate_latest

    from services.common.metrics import OperationsCollector

    store = FileOperationStore(tmp_path / "ops")
    registry = CollectorRegistry()
    registry.register(OperationsCollector(store, cache_s=60))
    _new(store)
    text = generate_latest(registry).decode()
    assert 'crossadapt_operations{kind="projection",state="PENDING"} 1.0' in text
