from . import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartSamplingRequest(_message.Message):
    __slots__ = ("dataset", "teacher", "config", "sample_name", "request_id")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    dataset: _common_pb2.DatasetRef
    teacher: _common_pb2.CheckpointRef
    config: SamplingConfig
    sample_name: str
    request_id: str
    def __init__(self, dataset: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., teacher: _Optional[_Union[_common_pb2.CheckpointRef, _Mapping]] = ..., config: _Optional[_Union[SamplingConfig, _Mapping]] = ..., sample_name: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartSamplingResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...

class SamplingConfig(_message.Message):
    __slots__ = ("ratio", "positive_ratio", "temporal_blocks", "unclicked_ratio", "seed", "target", "empty_block_policy", "disable_temporal", "disable_balance")
    RATIO_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_RATIO_FIELD_NUMBER: _ClassVar[int]
    TEMPORAL_BLOCKS_FIELD_NUMBER: _ClassVar[int]
    UNCLICKED_RATIO_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    EMPTY_BLOCK_POLICY_FIELD_NUMBER: _ClassVar[int]
    DISABLE_TEMPORAL_FIELD_NUMBER: _ClassVar[int]
    DISABLE_BALANCE_FIELD_NUMBER: _ClassVar[int]
    ratio: float
    positive_ratio: float
    temporal_blocks: int
    unclicked_ratio: float
    seed: int
    target: str
    empty_block_policy: str
    disable_temporal: bool
    disable_balance: bool
    def __init__(self, ratio: _Optional[float] = ..., positive_ratio: _Optional[float] = ..., temporal_blocks: _Optional[int] = ..., unclicked_ratio: _Optional[float] = ..., seed: _Optional[int] = ..., target: _Optional[str] = ..., empty_block_policy: _Optional[str] = ..., disable_temporal: _Optional[bool] = ..., disable_balance: _Optional[bool] = ...) -> None: ...
