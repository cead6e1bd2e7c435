"""Time-partitioned Parquet: partitions read in time order, and a saved position resumes exactly."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa
import pytest

from services.common.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError
from services.common.storage import DatasetPosition, DatasetStore, ObjectStore

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
ROWS = [3000, 1, 2500]  # per hour; the 1-row partition is an edge case


def _fill(store: DatasetStore) -> np.ndarray:
    """Three hourly partitions written out of time order; returns all ids in time order."""
    ids, start = [], 0
    tables = []
    for hour, rows in enumerate(ROWS):
        column = np.arange(start, start + rows, dtype=np.int64)
        tables.append((hour, pa.table({"id": column, "x": column.astype(np.float32) / 2})))
        ids.append(column)
        start += rows
    for hour, table in reversed(tables):
        store.write_partition("clicks", T0 + timedelta(hours=hour), table, row_group_rows=700)
    return np.concatenate(ids)


def _ids(batches) -> np.ndarray:  # noqa: ANN001
    chunks = [batch.column("id").to_numpy() for batch, _ in batches]
    return np.concatenate(chunks) if chunks else np.empty(0, dtype=np.int64)


def test_partitions_in_time_order_and_full_read(object_store: ObjectStore) -> None:
    store = DatasetStore(object_store)
    expected = _fill(store)
    assert store.partitions("clicks") == ["ts=20260101T000000Z", "ts=20260101T010000Z", "ts=20260101T020000Z"]
    batches = list(store.read("clicks", batch_rows=512))
    np.testing.assert_array_equal(_ids(batches), expected)
    assert all(batch.num_rows <= 512 for batch, _ in batches)
    assert batches[-1][1] == DatasetPosition(partition="ts=20260101T020000Z", row=2500)


@pytest.mark.parametrize("consumed_batches", [0, 1, 4, 5, 6, 9, 11])
def test_resume_from_a_saved_position_yields_exactly_the_rest(object_store: ObjectStore, consumed_batches: int) -> None:
    store = DatasetStore(object_store)
    expected = _fill(store)
    reader = store.read("clicks", batch_rows=600)
    seen, position = [], None
    for _ in range(consumed_batches):
        batch, position = next(reader)
        seen.append(batch.column("id").to_numpy())
    rest = _ids(store.read("clicks", start=position, batch_rows=250))
    np.testing.assert_array_equal(np.concatenate([*seen, rest]) if seen else rest, expected)


def test_a_deleted_partition_resumes_at_the_next_one(object_store: ObjectStore) -> None:
    store = DatasetStore(object_store)
    expected = _fill(store)
    object_store.delete("datasets/clicks/ts=20260101T000000Z/data.parquet")  # retention
    rest = _ids(store.read("clicks", start=DatasetPosition(partition="ts=20260101T000000Z", row=10)))
    np.testing.assert_array_equal(rest, expected[3000:])


def test_bad_positions_and_rewrites_are_rejected(object_store: ObjectStore) -> None:
    store = DatasetStore(object_store)
    _fill(store)
    with pytest.raises(InvalidArgumentError, match="past the end"):
        list(store.read("clicks", start=DatasetPosition(partition="ts=20260101T010000Z", row=2)))
    with pytest.raises(InvalidArgumentError):
        list(store.read("clicks", start=DatasetPosition(partition="hour=1", row=0)))
    with pytest.raises(AlreadyExistsError):
        store.write_partition("clicks", T0, pa.table({"id": [1]}))
    with pytest.raises(NotFoundError):
        list(store.read("no-such-dataset"))
    with pytest.raises(ValueError):
        DatasetPosition(partition="ts=20260101T000000Z", row=-1)


def test_first_schema_reads_only_parquet_footers(object_store: ObjectStore) -> None:
    """Start's schema check: schema and metadata of the first partition with rows, from its footer alone."""
    reads: list[tuple[str, int]] = []
    fetch_range = object_store.get_range

    def counting_range(key: str, offset: int, length: int) -> bytes:
        reads.append((key, length))
        return fetch_range(key, offset, length)

    store = DatasetStore(object_store)
    empty = pa.table({"id": pa.array([], pa.int64()), "x": pa.array([], pa.float32())})
    store.write_partition("wide", T0, empty)
    column = np.arange(200_000, dtype=np.int64)
    table = pa.table({"id": column, "x": column.astype(np.float32)}).replace_schema_metadata({"spec": "{}"})
    second = store.write_partition("wide", T0 + timedelta(hours=1), table)
    object_store.get_range = counting_range
    object_store.get_bytes = object_store.get_file = None  # a whole-object read would fail
    schema, partition = store.first_schema("wide")
    assert partition == second and schema.names == ["id", "x"] and schema.metadata == {b"spec": b"{}"}
    size = object_store.size(store._key("wide", second))
    assert sum(length for key, length in reads if second in key) < size / 20  # footer bytes, not the data
    store.write_partition("only-empty", T0, empty)
    assert store.first_schema("only-empty") is None  # no rows anywhere: the caller says FAILED_PRECONDITION
    with pytest.raises(NotFoundError):
        store.first_schema("missing")
