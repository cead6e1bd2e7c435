from . import common_pb2 as _common_pb2
from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ModelSpec(_message.Message):
    __slots__ = ("architecture", "embedding_dim", "hidden", "options")
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    architecture: str
    embedding_dim: int
    hidden: _containers.RepeatedScalarFieldContainer[int]
    options: _struct_pb2.Struct
    def __init__(self, architecture: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., hidden: _Optional[_Iterable[int]] = ..., options: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...

class DistillationConfig(_message.Message):
    __slots__ = ("kd_weight", "temperature", "frozen_epochs", "joint_epochs", "batch_size", "dense_lr", "embedding_lr", "checkpoint_every_steps", "world_size", "seed", "task_logit_shift", "base_rate", "kd_gate", "target", "adaptive", "reuse_teacher_network")
    KD_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    FROZEN_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    JOINT_EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    DENSE_LR_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_LR_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TASK_LOGIT_SHIFT_FIELD_NUMBER: _ClassVar[int]
    BASE_RATE_FIELD_NUMBER: _ClassVar[int]
    KD_GATE_FIELD_NUMBER: _ClassVar[int]
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ADAPTIVE_FIELD_NUMBER: _ClassVar[int]
    REUSE_TEACHER_NETWORK_FIELD_NUMBER: _ClassVar[int]
    kd_weight: float
    temperature: float
    frozen_epochs: int
    joint_epochs: int
    batch_size: int
    dense_lr: float
    embedding_lr: float
    checkpoint_every_steps: int
    world_size: int
    seed: int
    task_logit_shift: float
    base_rate: float
    kd_gate: str
    target: str
    adaptive: _common_pb2.AdaptiveKD
    reuse_teacher_network: bool
    def __init__(self, kd_weight: _Optional[float] = ..., temperature: _Optional[float] = ..., frozen_epochs: _Optional[int] = ..., joint_epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., dense_lr: _Optional[float] = ..., embedding_lr: _Optional[float] = ..., checkpoint_every_steps: _Optional[int] = ..., world_size: _Optional[int] = ..., seed: _Optional[int] = ..., task_logit_shift: _Optional[float] = ..., base_rate: _Optional[float] = ..., kd_gate: _Optional[str] = ..., target: _Optional[str] = ..., adaptive: _Optional[_Union[_common_pb2.AdaptiveKD, _Mapping]] = ..., reuse_teacher_network: _Optional[bool] = ...) -> None: ...

class StartDistillationRequest(_message.Message):
    __slots__ = ("student", "teacher", "sample", "config", "student_name", "request_id", "student_model", "validation")
    STUDENT_FIELD_NUMBER: _ClassVar[int]
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FIELD_NUMBER: _ClassVar[int]
    CONFIG_FIELD_NUMBER: _ClassVar[int]
    STUDENT_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STUDENT_MODEL_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_FIELD_NUMBER: _ClassVar[int]
    student: _common_pb2.CheckpointRef
    teacher: _common_pb2.CheckpointRef
    sample: _common_pb2.DatasetRef
    config: DistillationConfig
    student_name: str
    request_id: str
    student_model: ModelSpec
    validation: _common_pb2.DatasetRef
    def __init__(self, student: _Optional[_Union[_common_pb2.CheckpointRef, _Mapping]] = ..., teacher: _Optional[_Union[_common_pb2.CheckpointRef, _Mapping]] = ..., sample: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ..., config: _Optional[_Union[DistillationConfig, _Mapping]] = ..., student_name: _Optional[str] = ..., request_id: _Optional[str] = ..., student_model: _Optional[_Union[ModelSpec, _Mapping]] = ..., validation: _Optional[_Union[_common_pb2.DatasetRef, _Mapping]] = ...) -> None: ...

class StartDistillationResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...
