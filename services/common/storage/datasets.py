"""Time-partitioned Parquet datasets on an object store, read in time order from a saved position.

Layout (keys below the store root)::

    datasets/<dataset>/ts=20260101T050000Z/data.parquet   # one immutable file per partition (hour, day, ...)

A consumer reads partitions in time order in Arrow record batches; each batch comes with the
`DatasetPosition` just after it. Saving that position with a checkpoint and passing it back to
`read` resumes exactly at the next unread row, in the same or a later partition.

    for batch, position in store.read("ctr-stream", start=saved):   # batch: pyarrow.RecordBatch
        train_on(batch)
        saved = position
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field

from services.common.errors import AlreadyExistsError, DataLossError, InvalidArgumentError, NotFoundError
from services.common.storage.checkpoints import check_name
from services.common.storage.objects import ObjectStore

DATASETS_PREFIX = "datasets"
PARTITION_FILE = "data.parquet"
_PARTITION = re.compile(r"^ts=(\d{8}T\d{6}Z)$")


class DatasetPosition(BaseModel):
    """Where to resume: rows before `row` of `partition` (and all earlier partitions) were consumed."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    partition: str | None = Field(default=None, description="Partition id; None = before the first one.")
    row: int = Field(default=0, ge=0)


def partition_id(start: datetime) -> str:
    """`ts=YYYYMMDDTHHMMSSZ` of a partition's start time (UTC; naive datetimes are taken as UTC)."""
    if start.tzinfo is None:
        start = start.replace(tzinfo=timezone.utc)
    return "ts=" + start.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def partition_start(partition: str) -> datetime:
    match = _PARTITION.match(partition)
    if not match:
        raise InvalidArgumentError(f"not a partition id: {partition!r} (expected ts=YYYYMMDDTHHMMSSZ)", field="partition")
    return datetime.strptime(match.group(1), "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


class DatasetStore:
    """Write and read time-partitioned Parquet datasets."""

    def __init__(self, objects: ObjectStore, prefix: str = DATASETS_PREFIX) -> None:
        self.objects = objects
        self.prefix = prefix

    def _key(self, dataset: str, partition: str) -> str:
        return f"{self.prefix}/{check_name(dataset)}/{partition}/{PARTITION_FILE}"

    def write_partition(
        self, dataset: str, start: datetime, table: pa.Table, *, row_group_rows: int = 65_536, overwrite: bool = False
    ) -> str:
        """Store `table` as the partition starting at `start`; returns the partition id."""
        partition = partition_id(start)
        key = self._key(dataset, partition)
        if not overwrite and self.objects.exists(key):
            raise AlreadyExistsError(f"{dataset}/{partition} exists already (partitions are immutable)", field="partition")
        with tempfile.TemporaryDirectory(prefix="crossadapt-partition-") as tmp:
            path = Path(tmp) / PARTITION_FILE
            pq.write_table(table, path, row_group_size=row_group_rows)
            self.objects.put_file(key, path)
        return partition

    def partitions(self, dataset: str) -> list[str]:
        """Partition ids in time order (complete partitions only: each is one atomic object)."""
        children = self.objects.list_children(f"{self.prefix}/{check_name(dataset)}")
        found = [c for c in children if _PARTITION.match(c) and self.objects.exists(self._key(dataset, c))]
        return sorted(found, key=partition_start)

    def first_schema(self, dataset: str) -> tuple[pa.Schema, str] | None:
        """The schema (with its metadata) of the first partition that has rows, and that partition;
        read from the Parquet footers alone (two ranged reads each), never the data. None: no rows."""
        partitions = self.partitions(dataset)
        if not partitions and not self.objects.list_children(f"{self.prefix}/{check_name(dataset)}"):
            raise NotFoundError(f"no dataset named {dataset!r}", field="dataset")
        for partition in partitions:
            metadata = self.footer(dataset, partition)
            if metadata.num_rows > 0:
                return metadata.schema.to_arrow_schema(), partition
        return None

    def footer(self, dataset: str, partition: str) -> pq.FileMetaData:
        """One partition's Parquet footer (row count, row groups, schema) without reading its data."""
        key = self._key(dataset, partition)
        size = self.objects.size(key)
        tail = self.objects.get_range(key, size - 8, 8) if size >= 12 else b""
        length = int.from_bytes(tail[:4], "little") if tail[4:] == b"PAR1" else -1
        if not 0 < length <= size - 12:
            raise DataLossError(f"{dataset}/{partition}: not a Parquet file (bad footer)", field="dataset")
        footer = self.objects.get_range(key, size - 8 - length, length + 8)
        try:
            return pq.read_metadata(pa.BufferReader(b"PAR1" + footer))
        except (pa.ArrowException, OSError) as exc:
            raise DataLossError(f"{dataset}/{partition}: unreadable Parquet footer: {exc}", field="dataset") from None

    def read(
        self,
        dataset: str,
        start: DatasetPosition | None = None,
        *,
        batch_rows: int = 65_536,
        columns: list[str] | None = None,
    ) -> Iterator[tuple[pa.RecordBatch, DatasetPosition]]:
        """Record batches from `start` on, in time order, each with the position just after it.

        A saved partition that retention has deleted since resumes at the next later partition.
        """
        if batch_rows <= 0:
            raise InvalidArgumentError(f"batch_rows must be > 0, got {batch_rows}", field="batch_rows")
        start = start or DatasetPosition()
        partitions = self.partitions(dataset)
        if not partitions and not self.objects.list_children(f"{self.prefix}/{check_name(dataset)}"):
            raise NotFoundError(f"no dataset named {dataset!r}", field="dataset")
        if start.partition is not None:
            begin = partition_start(start.partition)
            partitions = [p for p in partitions if partition_start(p) >= begin]
        for partition in partitions:
            first_row = start.row if partition == start.partition else 0
            yield from self.read_partition(dataset, partition, first_row, batch_rows, columns)

    def read_partition(
        self, dataset: str, partition: str, first_row: int = 0, batch_rows: int = 65_536,
        columns: list[str] | None = None,
    ) -> Iterator[tuple[pa.RecordBatch, DatasetPosition]]:
        """Record batches of one partition from `first_row` on, each with the position just after it."""
        with tempfile.TemporaryDirectory(prefix="crossadapt-read-") as tmp:
            local = Path(tmp) / PARTITION_FILE
            self.objects.get_file(self._key(dataset, partition), local)
            parquet = pq.ParquetFile(local)
            total = parquet.metadata.num_rows
            if first_row > total:
                raise InvalidArgumentError(
                    f"position row {first_row} is past the end of {dataset}/{partition} ({total} rows)", field="row"
                )
            group_rows = [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)]
            group_starts = np.concatenate([[0], np.cumsum(group_rows)]).astype(np.int64)
            first_group = int(np.searchsorted(group_starts, first_row, side="right") - 1)
            if first_row == total or first_group >= parquet.num_row_groups:
                return
            row = int(group_starts[first_group])
            skip = first_row - row  # rows of the first row group that were consumed already
            batches = parquet.iter_batches(
                batch_size=batch_rows, row_groups=range(first_group, parquet.num_row_groups), columns=columns
            )
            for batch in batches:
                row += batch.num_rows
                if skip >= batch.num_rows:
                    skip -= batch.num_rows
                    continue
                if skip:
                    batch, skip = batch.slice(skip), 0
                yield batch, DatasetPosition(partition=partition, row=row)
