from . import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CoDistillationDriftSettings(_message.Message):
    __slots__ = ("metric", "windows", "bins", "low", "high", "max_replay", "rolling", "window_rows")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WINDOWS_FIELD_NUMBER: _ClassVar[int]
    BINS_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    MAX_REPLAY_FIELD_NUMBER: _ClassVar[int]
    ROLLING_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ROWS_FIELD_NUMBER: _ClassVar[int]
    metric: str
    windows: int
    bins: int
    low: float
    high: float
    max_replay: float
    rolling: bool
    window_rows: int
    def __init__(self, metric: _Optional[str] = ..., windows: _Optional[int] = ..., bins: _Optional[int] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., max_replay: _Optional[float] = ..., rolling: _Optional[bool] = ..., window_rows: _Optional[int] = ...) -> None: ...

class CollaborativeCoDistillation(_message.Message):
    __slots__ = ("weight", "temperature", "gate", "scale_by_t2")
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    GATE_FIELD_NUMBER: _ClassVar[int]
    SCALE_BY_T2_FIELD_NUMBER: _ClassVar[int]
    weight: float
    temperature: float
    gate: str
    scale_by_t2: bool
    def __init__(self, weight: _Optional[float] = ..., temperature: _Optional[float] = ..., gate: _Optional[str] = ..., scale_by_t2: _Optional[bool] = ...) -> None: ...

class CoDistillationConfig(_message.Message):
    __slots__ = ("teacher_update_interval", "batch_size", "kd_weight", "temperature", "checkpoint_every_batches", "drift", "dense_lr", "embedding_lr", "seed", "teacher_dense_lr", "teacher_embedding_lr", "window_batches", "grow_vocabulary", "projection_seed", "target", "kd_gate", "adaptive", "collaborative", "checkpoint_every_seconds")
    TEACHER_UPDATE_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    KD_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_BATCHES_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    DENSE_LR_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_LR_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TEACHER_DENSE_LR_FIELD_NUMBER: _ClassVar[int]
    TEACHER_EMBEDDING_LR_FIELD_NUMBER: _ClassVar[int]
    WINDOW_BATCHES_FIELD_NUMBER: _ClassVar[int]
    GROW_VOCABULARY_FIELD_NUMBER: _ClassVar[int]
    PROJECTION_SEED_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    KD_GATE_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_FIELD_NUMBER: _ClassVar[int]
    COLLABORATIVE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    teacher_update_interval: int
    batch_size: int
    kd_weight: float
    temperature: float
    checkpoint_every_batches: int
    drift: CoDistillationDriftSettings
    dense_lr: float
    embedding_lr: float
    seed: int
    teacher_dense_lr: float
    teacher_embedding_lr: float
    window_batches: int
    grow_vocabulary: bool
    projection_seed: int
    target: str
    kd_gate: str
    adaptive: _common_pb2.AdaptiveKD
    collaborative: CollaborativeCoDistillation
    checkpoint_every_seconds: float
    def __init__(self, teacher_update_interval: _Optional[int] = ..., batch_size: _Optional[int] = ..., kd_weight: _Optional[float] = ..., temperature: _Optional[float] = ..., checkpoint_every_batches: _Optional[int] = ..., drift: _Optional[_Union[CoDistillationDriftSettings, _Mapping]] = ..., dense_lr: _Optional[float] = ..., embedding_lr: _Optional[float] = ..., seed: _Optional[int] = ..., teacher_dense_lr: _Optional[float] = ..., teacher_embedding_lr: _Optional[float] = ..., window_batches: _Optional[int] = ..., grow_vocabulary: _Optional[bool] = ..., projection_seed: _Optional[int] = ..., target: _Optional[str] = ..., kd_gate: _Optional[str] = ..., adaptive: _Optional[_Union[_common_pb2.AdaptiveKD, _Mapping]] = ..., collaborative: _Optional[_Union[CollaborativeCoDistillation, _Mapping]] = ..., checkpoint_every_seconds: _Optional[float] = ...) -> None: ...

class StartCoDistillationRequest(_message.Message):
    __slots__ = ("student", "teacher", "stream", "replay", "config", "student_name", "teacher_name", "request_id", "follow")
    STUDENT_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    STREAM_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STUDENT_NAME_FIELD_NUMBER: _ClassVar[int]
    TEACHER_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    student: _common_pb2.CheckpointRef
    teacher: _common_pb2.CheckpointRef
    stream: _common_pb2.DatasetRef
    replay: _common_pb2.DatasetRef
    config: CoDistillationConfig
    student_name: str
    teacher_name: str
    request_id: str
    follow: bool
    def __init__(self, student: _Optional[_Union[_common_pb2.CheckpointRef, _Mapping]] = ..., teacher: _Optional[_Union[_common_pb2.CheckpointRef, _Mapping]] = ..., stream: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., replay: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., config: _Optional[_Union[CoDistillationConfig, _Mapping]] = ..., student_name: _Optional[str] = ..., teacher_name: _Optional[str] = ..., request_id: _Optional[str] = ..., follow: _Optional[bool] = ...) -> None: ...

class StartCoDistillationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...
