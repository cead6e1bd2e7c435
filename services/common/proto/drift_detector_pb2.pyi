import datetime

from . import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DriftConfig(_message.Message):
    __slots__ = ("metric", "windows", "bins", "low", "high", "max_replay", "window_rows", "binning", "noise_floor", "kl_epsilon", "floor_runs")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLAY_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    BINNING_FIELD_NUMBER: _ClassVar[int]
    NOISE_FLOOR_FIELD_NUMBER: _ClassVar[int]
    KL_EPSILON_FIELD_NUMBER: _ClassVar[int]
    FLOOR_RUNS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    windows: int
    bins: int
    low: float
    high: float
    max_replay: float
    window_rows: int
    binning: str
    noise_floor: str
    kl_epsilon: float
    floor_runs: int
    def __init__(self, metric: _Optional[str] = ..., windows: _Optional[int] = ..., bins: _Optional[int] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., max_replay: _Optional[float] = ..., window_rows: _Optional[int] = ..., binning: _Optional[str] = ..., noise_floor: _Optional[str] = ..., kl_epsilon: _Optional[float] = ..., floor_runs: _Optional[int] = ...) -> None: ...

class ComputeDriftRequest(_message.Message):
    __slots__ = ("reference", "stream", "config", "request_id")
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    reference: _common_pb2.DatasetRef
    stream: _common_pb2.DatasetRef
    config: DriftConfig
    request_id: str
    def __init__(self, reference: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., stream: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., config: _Optional[_Union[DriftConfig, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ComputeDriftResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...

class UpdateDriftRequest(_message.Message):
    __slots__ = ("name", "partition", "reference", "config")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    name: str
    partition: _common_pb2.DatasetRef
    reference: _common_pb2.DatasetRef
    config: DriftConfig
    def __init__(self, name: _Optional[str] = ..., partition: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., reference: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., config: _Optional[_Union[DriftConfig, _Mapping]] = ...) -> None: ...

class UpdateDriftResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: DriftState
    def __init__(self, state: _Optional[_Union[DriftState, _Mapping]] = ...) -> None: ...

class GetDriftRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetDriftResponse(_message.Message):
    __slots__ = ("state",)
    STATE_FIELD_NUMBER: _ClassVar[int]
    state: DriftState
    def __init__(self, state: _Optional[_Union[DriftState, _Mapping]] = ...) -> None: ...

class FeatureDivergence(_message.Message):
    __slots__ = ("feature", "kind", "mean", "max", "raw_mean", "floor_mean")
    FEATURE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    RAW_MEAN_FIELD_NUMBER: _ClassVar[int]
    FLOOR_MEAN_FIELD_NUMBER: _ClassVar[int]
    feature: str
    kind: str
    mean: float
    max: float
    raw_mean: float
    floor_mean: float
    def __init__(self, feature: _Optional[str] = ..., kind: _Optional[str] = ..., mean: _Optional[float] = ..., max: _Optional[float] = ..., raw_mean: _Optional[float] = ..., floor_mean: _Optional[float] = ...) -> None: ...

class DriftState(_message.Message):
    __slots__ = ("name", "replay_ratio", "shift", "source", "rows", "windows", "features", "partitions", "reference", "reference_shift", "config", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REPLAY_RATIO_FIELD_NUMBER: _ClassVar[int]
    SHIFT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ROWS_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_SHIFT_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    replay_ratio: float
    shift: float
    source: str
    rows: int
    windows: int
    features: _containers.RepeatedCompositeFieldContainer[FeatureDivergence]
    partitions: _containers.RepeatedScalarFieldContainer[str]
    reference: _common_pb2.DatasetRef
    reference_shift: float
    config: DriftConfig
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., replay_ratio: _Optional[float] = ..., shift: _Optional[float] = ..., source: _Optional[str] = ..., rows: _Optional[int] = ..., windows: _Optional[int] = ..., features: _Optional[_Iterable[_Union[FeatureDivergence, _Mapping]]] = ..., partitions: _Optional[_Iterable[str]] = ..., reference: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., reference_shift: _Optional[float] = ..., config: _Optional[_Union[DriftConfig, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
