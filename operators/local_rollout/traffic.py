"""A prepared split replayed as live traffic: time-ordered V2 inference batches and their delayed labels.

Each row becomes one scored request row: its categorical ids turned back into their vocabulary values,
its numerical features as raw values, a cohort key (the dataset's user column) and a row id. The
prepared split stores numbers after the log transform (x → log2 x for x > 2); `raw_numbers` gives
values that the predictor's transform (the same one, `crossadapt.data.columns.numerical_values`)
maps back onto the prepared ones: 2^v for v > 2, v itself otherwise.

Labels follow the traffic: a row's label is sent back once the replay clock (the timestamp of the last
row sent) has passed the row's own timestamp plus `label_delay_s`, as clicks come back after a view.

Batches are built column by column (numpy and pyarrow kernels, no loop over rows); BYTES tensors use
the V2 raw encoding (a little-endian uint32 length before each value).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

UNKNOWN_VALUE = "<UNK>"  # what id 0 decodes to; the predictor looks it up as an unknown value


def raw_bytes_tensor(values: pa.Array) -> bytes:
    """The V2 raw form of a BYTES tensor: for each value, its uint32 length (little endian) then its bytes."""
    values = values.cast(pa.large_string()) if values.type != pa.large_string() else values
    count = len(values)
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int64)[values.offset:values.offset + count + 1]
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8) if values.buffers()[2] is not None \
        else np.empty(0, np.uint8)
    lengths = np.diff(offsets)
    out = np.empty(4 * count + int(lengths.sum()), dtype=np.uint8)
    prefix_at = np.arange(count, dtype=np.int64) * 4 + (offsets[:-1] - offsets[0])
    prefix_slots = (prefix_at[:, None] + np.arange(4)).ravel()
    out[prefix_slots] = lengths.astype("<u4").view(np.uint8)
    is_data = np.ones(out.shape[0], dtype=bool)
    is_data[prefix_slots] = False
    out[is_data] = data[offsets[0]:offsets[-1]]
    return out.tobytes()


def log_transformed(dataset: Any) -> bool:
    """Whether the prepared dataset's numbers went through the log transform (PrepareConfig's default: yes)."""
    return bool(getattr(dataset.manifest.preprocessing, "log_transform", True))


def raw_numbers(prepared: np.ndarray, log_transformed: bool) -> np.ndarray:
    """Raw values whose log transform is `prepared` (a stored value v > 2 came from 2^v > 4, one ≤ 2 from itself)."""
    if not log_transformed:
        return prepared
    return np.where(prepared > 2, np.exp2(prepared.astype(np.float64)), prepared).astype(np.float32)


@dataclass(frozen=True)
class LabelDelivery:
    """Labels due at some point of the replay: row ids and their clicks."""

    row_ids: list[str]
    labels: list[int]


def v2_protos() -> tuple[Any, Any]:
    """KServe's V2 inference messages and stubs (`grpc_predict_v2_pb2`, `..._pb2_grpc`).

    Importing `kserve` parses `sys.argv` with KServe's own argparse (kserve.model_server, at import
    time), which fails on this CLI's options (`--config` is a prefix of its `--configure_logging`):
    the import sees a bare argv."""
    import sys

    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        from kserve.protocol.grpc import grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc
    finally:
        sys.argv = argv
    return grpc_predict_v2_pb2, grpc_predict_v2_pb2_grpc


class ReplayTraffic:
    """A split of a prepared dataset in time order, cut into request batches, with delayed feedback."""

    def __init__(self, dataset: Any, split: str = "test", *, cohort_key: str = "user_id", row_id_field: str = "row_id",
                 batch_rows: int = 256, label_delay_s: float = 0.0, max_rows: int | None = None,
                 row_id_prefix: str | None = None) -> None:
        if batch_rows < 1:
            raise ValueError(f"batch_rows must be at least 1, got {batch_rows}")
        if label_delay_s < 0:
            raise ValueError(f"label_delay_s must be >= 0, got {label_delay_s}")
        arrays = dataset.split(split)
        rows = len(arrays) if max_rows is None else min(max_rows, len(arrays))
        if rows == 0:
            raise ValueError(f"split {split!r} of {dataset.path} has no rows to replay")
        timestamps = (np.asarray(arrays.timestamp, dtype=np.int64) if arrays.timestamp is not None
                      else np.arange(len(arrays), dtype=np.int64))
        order = np.argsort(timestamps, kind="stable")[:rows]
        self.split, self.cohort_key, self.row_id_field = split, cohort_key, row_id_field
        self.batch_rows, self.label_delay_s = batch_rows, float(label_delay_s)
        self.timestamps = timestamps[order]
        self.labels = np.asarray(arrays.label)[order].astype(np.int64)
        self.categorical = np.asarray(arrays.categorical)[order]
        spec = dataset.feature_spec
        self.categorical_fields = [field.name for field in spec.categorical]
        self.numerical_fields = list(spec.numerical)
        prepared = np.asarray(arrays.numerical)[order][:, :len(self.numerical_fields)]
        self.numerical = np.ascontiguousarray(raw_numbers(prepared, log_transformed(dataset)), dtype=np.float32)
        vocabulary = dataset.vocabulary
        self._values = {name: pa.concat_arrays([pa.array([UNKNOWN_VALUE], pa.string()),
                                                vocabulary.values(name).cast(pa.string())])
                        for name in self.categorical_fields}
        users = np.asarray(arrays.user)[order] if arrays.user is not None else order
        self.cohorts = pa.array(np.char.add("user-", users.astype(str)), pa.string())
        # Row ids join labels to scored rows: a second pass over the same split needs its own prefix.
        self.row_ids = np.char.add(f"{row_id_prefix or split}-", order.astype(str))
        self._labelled = 0  # rows whose label has been sent back

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    @property
    def batches(self) -> range:
        """Start row of each batch."""
        return range(0, len(self), self.batch_rows)

    def request(self, start: int, model_name: str) -> Any:
        """The batch starting at row `start` as a V2 `ModelInferRequest` (raw contents)."""
        pb, _ = v2_protos()
        stop = min(start + self.batch_rows, len(self))
        count = stop - start
        request = pb.ModelInferRequest(model_name=model_name, id=f"{self.split}-{start}")
        raw = []
        for index, name in enumerate(self.categorical_fields):
            ids = pa.array(self.categorical[start:stop, index].astype(np.int64))
            request.inputs.add(name=name, datatype="BYTES", shape=[count])
            raw.append(raw_bytes_tensor(self._values[name].take(ids)))
        for index, name in enumerate(self.numerical_fields):
            request.inputs.add(name=name, datatype="FP32", shape=[count])
            raw.append(self.numerical[start:stop, index].astype("<f4").tobytes())
        request.inputs.add(name=self.cohort_key, datatype="BYTES", shape=[count])
        raw.append(raw_bytes_tensor(self.cohorts[start:stop]))
        request.inputs.add(name=self.row_id_field, datatype="BYTES", shape=[count])
        raw.append(raw_bytes_tensor(pa.array(self.row_ids[start:stop], pa.string())))
        request.raw_input_contents.extend(raw)
        return request

    def clock_after(self, start: int) -> int:
        """The replay clock once the batch starting at `start` has been sent: its last row's timestamp."""
        return int(self.timestamps[min(start + self.batch_rows, len(self)) - 1])

    def due_labels(self, clock: float, sent_rows: int) -> LabelDelivery:
        """Labels of sent rows whose delay has passed at `clock` and that were not sent back yet."""
        due = int(np.searchsorted(self.timestamps[:sent_rows], clock - self.label_delay_s, side="right"))
        first, self._labelled = self._labelled, max(self._labelled, due)
        return LabelDelivery(self.row_ids[first:self._labelled].tolist(), self.labels[first:self._labelled].tolist())

    def remaining_labels(self, sent_rows: int) -> LabelDelivery:
        """Every label of the sent rows not sent back yet (the end of the replay)."""
        first, self._labelled = self._labelled, max(self._labelled, sent_rows)
        return LabelDelivery(self.row_ids[first:self._labelled].tolist(), self.labels[first:self._labelled].tolist())

    @property
    def labelled_rows(self) -> int:
        return self._labelled
