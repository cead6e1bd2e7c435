"""Rows of a time-partitioned dataset by global row number (row r = the r-th row in time order).

A task that handles one temporal block or one window reads only the partitions that hold its rows:
`PartitionIndex` (partition ids and their row counts, recorded once by a planning step) turns global
row numbers into (partition, row) positions, and `read_range` / `take_rows` read from there with
`model_io.read_split`, which also refuses a partition whose schema is not the dataset's.

Errors name what was bad: an unreadable (corrupt) partition is FAILED_PRECONDITION naming it; a
local disk error stays an OSError (the task retries it; it is not the data's fault, nor DATA_LOSS).

Nothing here is specific to one service.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

from crossadapt.data.arrays import SplitArrays
from crossadapt.models.spec import FeatureSpec
from services.common.errors import FailedPreconditionError, InvalidArgumentError
from services.common.model_io import read_split
from services.common.storage import DatasetPosition, DatasetStore

READ_BATCH_ROWS = 65_536


class PartitionIndex(BaseModel):
    """The partitions of a dataset in time order and their row counts (a snapshot: partitions are immutable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dataset: str
    partitions: tuple[str, ...]
    rows: tuple[int, ...]

    @property
    def total(self) -> int:
        return int(sum(self.rows))

    def offsets(self) -> np.ndarray:
        """[P + 1] global row number of each partition's first row (and the total)."""
        return np.concatenate([[0], np.cumsum(self.rows, dtype=np.int64)]).astype(np.int64)

    def position(self, row: int) -> DatasetPosition:
        """The position just before global row `row` (0 <= row < total)."""
        if not 0 <= row < self.total:
            raise ValueError(f"row {row} is outside [0, {self.total}) of {self.dataset}")
        offsets = self.offsets()
        part = int(np.searchsorted(offsets, row, side="right") - 1)
        while self.rows[part] == 0:  # empty partitions hold no row
            part += 1
        return DatasetPosition(partition=self.partitions[part], row=int(row - offsets[part]))


def _parse_error(exc: BaseException) -> bool:
    """pyarrow could not parse a partition (an OSError with an errno is a disk or network error instead)."""
    return isinstance(exc, pa.ArrowException) or (isinstance(exc, OSError) and exc.errno is None)


def _unreadable_partition(datasets: DatasetStore, name: str, after: str | None) -> str | None:
    """The first partition from `after` on that pyarrow cannot read (the failure path only: it reads them again).

    DatasetStore.read does not say which partition it was reading when pyarrow failed; reading the
    candidates one by one (`read_partition`, the store's own per-partition reader) does.
    """
    partitions = datasets.partitions(name)
    first = partitions.index(after) if after in partitions else 0
    for partition in partitions[first:]:
        try:
            for _ in datasets.read_partition(name, partition, 0, READ_BATCH_ROWS):
                pass
        except Exception as exc:  # noqa: BLE001 - only parse errors name a partition
            if _parse_error(exc):
                return partition
            raise
    return None


def _batches(datasets: DatasetStore, name: str, spec: FeatureSpec, start: DatasetPosition | None,
             ) -> Iterator[tuple[SplitArrays, DatasetPosition]]:
    """read_split with parse errors named: an unreadable (corrupt) partition is FAILED_PRECONDITION
    naming it; a partition with another schema is INVALID_ARGUMENT (read_split)."""
    iterator = read_split(datasets, name, start, batch_rows=READ_BATCH_ROWS, spec=spec)
    current = start.partition if start is not None else None
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:
            if not _parse_error(exc):
                raise
            partition = _unreadable_partition(datasets, name, current)
            where = f"{name}/{partition}" if partition else name
            raise FailedPreconditionError(f"partition {where} is unreadable (corrupt Parquet?): {exc}",
                                          field="dataset") from exc
        current = item[1].partition
        yield item


def scan(datasets: DatasetStore, name: str, spec: FeatureSpec, columns: tuple[str, ...],
         ) -> tuple[dict[str, np.ndarray | None], PartitionIndex]:
    """Some columns of every row (time order) and the dataset's partition index, in one pass.

    `columns` are SplitArrays attribute names ("label", "timestamp", "numerical", ...); a column the
    data lacks comes back as None.
    """
    parts: dict[str, list[np.ndarray]] = {column: [] for column in columns}
    missing: set[str] = set()
    partitions: list[str] = []
    rows: list[int] = []
    for arrays, position in _batches(datasets, name, spec, None):
        if not partitions or partitions[-1] != position.partition:
            partitions.append(str(position.partition))
            rows.append(0)
        rows[-1] += len(arrays)
        for column in columns:
            value = getattr(arrays, column)
            if value is None:
                missing.add(column)
            else:
                parts[column].append(np.asarray(value))
    index = PartitionIndex(dataset=name, partitions=tuple(partitions), rows=tuple(rows))
    out = {column: None if column in missing or not parts[column] else np.concatenate(parts[column])
           for column in columns}
    return out, index


def read_range(datasets: DatasetStore, index: PartitionIndex, spec: FeatureSpec, lo: int, hi: int) -> SplitArrays:
    """Global rows [lo, hi) as one split, reading only the partitions that hold them."""
    if not 0 <= lo < hi <= index.total:
        raise ValueError(f"row range [{lo}, {hi}) is not inside [0, {index.total}) of {index.dataset}")
    parts: list[SplitArrays] = []
    have = 0
    for arrays, _ in _batches(datasets, index.dataset, spec, index.position(lo)):
        keep = min(len(arrays), hi - lo - have)
        parts.append(arrays.slice(0, keep) if keep < len(arrays) else arrays)
        have += keep
        if have == hi - lo:
            break
    if have != hi - lo:
        raise FailedPreconditionError(
            f"dataset {index.dataset!r} has fewer rows than when it was planned ({lo + have} < {hi})", field="dataset")
    return SplitArrays.concat(parts)


def take_rows(datasets: DatasetStore, index: PartitionIndex, spec: FeatureSpec, row_ids: np.ndarray) -> SplitArrays:
    """The rows at global `row_ids` (any order, repeats allowed), in that order.

    Reads from the partition of the first row wanted to that of the last; each batch contributes
    the wanted rows it holds, so memory stays at the rows taken plus one batch.
    """
    row_ids = np.asarray(row_ids, dtype=np.int64)
    if row_ids.size == 0:
        return read_range(datasets, index, spec, 0, 1).take(np.zeros(0, dtype=np.int64))
    wanted = np.unique(row_ids)  # sorted
    if wanted[0] < 0 or wanted[-1] >= index.total:
        raise ValueError(f"row ids outside [0, {index.total}) of {index.dataset}")
    offsets = index.offsets()
    gathered: list[SplitArrays] = []
    found = 0
    for arrays, position in _batches(datasets, index.dataset, spec, index.position(int(wanted[0]))):
        part = index.partitions.index(str(position.partition))
        first = int(offsets[part] + position.row - len(arrays))  # global row of the batch's first row
        lo, hi = np.searchsorted(wanted, [first, first + len(arrays)])
        if hi > lo:
            gathered.append(arrays.take(wanted[lo:hi] - first))
            found = int(hi)
        if found == len(wanted):
            break
    if found != len(wanted):
        raise FailedPreconditionError(
            f"dataset {index.dataset!r} has fewer rows than when it was planned (row {wanted[found]} is gone)",
            field="dataset")
    unique_rows = SplitArrays.concat(gathered)
    return unique_rows.take(np.searchsorted(wanted, row_ids))


def partition_batches(datasets: DatasetStore, name: str, partition: str, spec: FeatureSpec, vocab_hash: str = "",
                      ) -> Iterator[SplitArrays]:
    """The rows of ONE partition in batches; its recorded spec must be `spec`, and its vocabulary hash
    `vocab_hash` where both are known (INVALID_ARGUMENT naming the partition).

    DatasetStore.read runs on into later partitions (and downloads the next one to find its first
    batch); the store's per-partition reader stops at the partition's end.
    """
    from crossadapt.models.spec import FeatureSpec as Spec
    from services.common.model_io import SPEC_METADATA_KEY, VOCAB_HASH_METADATA_KEY, table_arrays

    where = f"{name}/{partition}"
    try:
        for batch, _ in datasets.read_partition(name, partition, 0, READ_BATCH_ROWS):
            metadata = batch.schema.metadata or {}
            found = Spec.model_validate_json(metadata[SPEC_METADATA_KEY]) if SPEC_METADATA_KEY in metadata else None
            if found != spec:
                raise InvalidArgumentError(
                    f"partition {where} has schema {_describe(found)}, expected {_describe(spec)}", field="partition")
            found_hash = metadata.get(VOCAB_HASH_METADATA_KEY, b"").decode()
            if vocab_hash and found_hash and found_hash != vocab_hash:
                raise InvalidArgumentError(f"partition {where} was encoded with vocabulary {found_hash[:12]}…, "
                                           f"expected {vocab_hash[:12]}…", field="partition")
            yield table_arrays(batch, spec)
    except Exception as exc:
        if not _parse_error(exc):
            raise
        raise FailedPreconditionError(f"partition {where} is unreadable (corrupt Parquet?): {exc}",
                                      field="partition") from exc


def _describe(spec: FeatureSpec | None) -> str:
    if spec is None:
        return "(none recorded)"
    categorical = ", ".join(f"{f.name}[{f.vocab_size}]" for f in spec.categorical)
    return f"categorical ({categorical}) + numerical ({', '.join(spec.numerical)})"
