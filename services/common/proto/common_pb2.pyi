import datetime

from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OperationState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OPERATION_STATE_UNSPECIFIED: _ClassVar[OperationState]
    OPERATION_STATE_PENDING: _ClassVar[OperationState]
    OPERATION_STATE_RUNNING: _ClassVar[OperationState]
    OPERATION_STATE_SUCCEEDED: _ClassVar[OperationState]
    OPERATION_STATE_FAILED: _ClassVar[OperationState]
    OPERATION_STATE_CANCELLED: _ClassVar[OperationState]
OPERATION_STATE_UNSPECIFIED: OperationState
OPERATION_STATE_PENDING: OperationState
OPERATION_STATE_RUNNING: OperationState
OPERATION_STATE_SUCCEEDED: OperationState
OPERATION_STATE_FAILED: OperationState
OPERATION_STATE_CANCELLED: OperationState

class CheckpointRef(_message.Message):
    __slots__ = ("name", "version")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class DatasetPosition(_message.Message):
    __slots__ = ("partition", "row")
    PARTITION_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    partition: str
    row: int
    def __init__(self, partition: _Optional[str] = ..., row: _Optional[int] = ...) -> None: ...

class DatasetRef(_message.Message):
    __slots__ = ("name", "position")
    NAME_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    name: str
    position: DatasetPosition
    def __init__(self, name: _Optional[str] = ..., position: _Optional[_Union[DatasetPosition, _Mapping]] = ...) -> None: ...

class AdaptiveSchedule(_message.Message):
    __slots__ = ("ema_window", "warmup", "max_change")
    EMA_WINDOW_FIELD_NUMBER: _ClassVar[int]
    WARMUP_FIELD_NUMBER: _ClassVar[int]
    MAX_CHANGE_FIELD_NUMBER: _ClassVar[int]
    ema_window: int
    warmup: int
    max_change: float
    def __init__(self, ema_window: _Optional[int] = ..., warmup: _Optional[int] = ..., max_change: _Optional[float] = ...) -> None: ...

class AdaptiveKD(_message.Message):
    __slots__ = ("lambda_floor", "gap_onset", "gap_saturation", "replay_floor", "online", "offline", "offline_eval_every_steps", "offline_valid_rows")
    LAMBDA_FLOOR_FIELD_NUMBER: _ClassVar[int]
    GAP_ONSET_FIELD_NUMBER: _ClassVar[int]
    GAP_SATURATION_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FLOOR_FIELD_NUMBER: _ClassVar[int]
    ONLINE_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_EVAL_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    OFFLINE_VALID_ROWS_FIELD_NUMBER: _ClassVar[int]
    lambda_floor: float
    gap_onset: float
    gap_saturation: float
    replay_floor: float
    online: AdaptiveSchedule
    offline: AdaptiveSchedule
    offline_eval_every_steps: int
    offline_valid_rows: int
    def __init__(self, lambda_floor: _Optional[float] = ..., gap_onset: _Optional[float] = ..., gap_saturation: _Optional[float] = ..., replay_floor: _Optional[float] = ..., online: _Optional[_Union[AdaptiveSchedule, _Mapping]] = ..., offline: _Optional[_Union[AdaptiveSchedule, _Mapping]] = ..., offline_eval_every_steps: _Optional[int] = ..., offline_valid_rows: _Optional[int] = ...) -> None: ...

class OperationError(_message.Message):
    __slots__ = ("code", "code_name", "message", "field")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    code: int
    code_name: str
    message: str
    field: str
    def __init__(self, code: _Optional[int] = ..., code_name: _Optional[str] = ..., message: _Optional[str] = ..., field: _Optional[str] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("id", "kind", "state", "progress", "stage", "error", "checkpoint", "dataset", "create_time", "update_time", "details")
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DETAILS_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    state: OperationState
    progress: float
    stage: str
    error: OperationError
    checkpoint: CheckpointRef
    dataset: DatasetRef
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    details: _struct_pb2.Struct
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., state: _Optional[_Union[OperationState, str]] = ..., progress: _Optional[float] = ..., stage: _Optional[str] = ..., error: _Optional[_Union[OperationError, _Mapping]] = ..., checkpoint: _Optional[_Union[CheckpointRef, _Mapping]] = ..., dataset: _Optional[_Union[DatasetRef, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., details: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
