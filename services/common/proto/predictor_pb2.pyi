import datetime

from . import common_pb2 as _common_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Arm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ARM_UNSPECIFIED: _ClassVar[Arm]
    ARM_TEACHER: _ClassVar[Arm]
    ARM_STUDENT: _ClassVar[Arm]
ARM_UNSPECIFIED: Arm
ARM_TEACHER: Arm
ARM_STUDENT: Arm

class Split(_message.Message):
    __slots__ = ("student_weight", "salt")
    STUDENT_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    SALT_FIELD_NUMBER: _ClassVar[int]
    student_weight: float
    salt: str
    def __init__(self, student_weight: _Optional[float] = ..., salt: _Optional[str] = ...) -> None: ...

class ConfidenceInterval(_message.Message):
    __slots__ = ("estimate", "lower", "upper", "level")
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    LOWER_FIELD_NUMBER: _ClassVar[int]
    UPPER_FIELD_NUMBER: _ClassVar[int]
    LEVEL_FIELD_NUMBER: _ClassVar[int]
    estimate: float
    lower: float
    upper: float
    level: float
    def __init__(self, estimate: _Optional[float] = ..., lower: _Optional[float] = ..., upper: _Optional[float] = ..., level: _Optional[float] = ...) -> None: ...

class ArmMetrics(_message.Message):
    __slots__ = ("arm", "checkpoint", "served_rows", "scored_rows", "labelled_rows", "auc", "logloss", "pcoc", "unknown_values")
    ARM_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SERVED_ROWS_FIELD_NUMBER: _ClassVar[int]
    SCORED_ROWS_FIELD_NUMBER: _ClassVar[int]
    LABELLED_ROWS_FIELD_NUMBER: _ClassVar[int]
    AUC_FIELD_NUMBER: _ClassVar[int]
    LOGLOSS_FIELD_NUMBER: _ClassVar[int]
    PCOC_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_VALUES_FIELD_NUMBER: _ClassVar[int]
    arm: Arm
    checkpoint: _common_pb2.CheckpointRef
    served_rows: int
    scored_rows: int
    labelled_rows: int
    auc: float
    logloss: float
    pcoc: float
    unknown_values: int
    def __init__(self, arm: _Optional[_Union[Arm, str]] = ..., checkpoint: _Optional[_Union[_common_pb2.CheckpointRef, _Mapping]] = ..., served_rows: _Optional[int] = ..., scored_rows: _Optional[int] = ..., labelled_rows: _Optional[int] = ..., auc: _Optional[float] = ..., logloss: _Optional[float] = ..., pcoc: _Optional[float] = ..., unknown_values: _Optional[int] = ...) -> None: ...

class SetSplitRequest(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class SetSplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class GetSplitRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSplitResponse(_message.Message):
    __slots__ = ("split",)
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    split: Split
    def __init__(self, split: _Optional[_Union[Split, _Mapping]] = ...) -> None: ...

class SwapArmRequest(_message.Message):
    __slots__ = ("arm", "checkpoint")
    ARM_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    arm: Arm
    checkpoint: _common_pb2.CheckpointRef
    def __init__(self, arm: _Optional[_Union[Arm, str]] = ..., checkpoint: _Optional[_Union[_common_pb2.CheckpointRef, _Mapping]] = ...) -> None: ...

class SwapArmResponse(_message.Message):
    __slots__ = ("arm",)
    ARM_FIELD_NUMBER: _ClassVar[int]
    arm: ArmMetrics
    def __init__(self, arm: _Optional[_Union[ArmMetrics, _Mapping]] = ...) -> None: ...

class GetArmMetricsRequest(_message.Message):
    __slots__ = ("window_seconds",)
    WINDOW_SECONDS_FIELD_NUMBER: _ClassVar[int]
    window_seconds: float
    def __init__(self, window_seconds: _Optional[float] = ...) -> None: ...

class GetArmMetricsResponse(_message.Message):
    __slots__ = ("teacher", "student", "split", "paired_rows", "delta_auc", "delta_logloss", "student_pcoc", "teacher_pcoc", "window_start", "shadow_dropped_rows")
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    STUDENT_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    PAIRED_ROWS_FIELD_NUMBER: _ClassVar[int]
    DELTA_AUC_FIELD_NUMBER: _ClassVar[int]
    DELTA_LOGLOSS_FIELD_NUMBER: _ClassVar[int]
    STUDENT_PCOC_FIELD_NUMBER: _ClassVar[int]
    TEACHER_PCOC_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    SHADOW_DROPPED_ROWS_FIELD_NUMBER: _ClassVar[int]
    teacher: ArmMetrics
    student: ArmMetrics
    split: Split
    paired_rows: int
    delta_auc: ConfidenceInterval
    delta_logloss: ConfidenceInterval
    student_pcoc: ConfidenceInterval
    teacher_pcoc: ConfidenceInterval
    window_start: _timestamp_pb2.Timestamp
    shadow_dropped_rows: int
    def __init__(self, teacher: _Optional[_Union[ArmMetrics, _Mapping]] = ..., student: _Optional[_Union[ArmMetrics, _Mapping]] = ..., split: _Optional[_Union[Split, _Mapping]] = ..., paired_rows: _Optional[int] = ..., delta_auc: _Optional[_Union[ConfidenceInterval, _Mapping]] = ..., delta_logloss: _Optional[_Union[ConfidenceInterval, _Mapping]] = ..., student_pcoc: _Optional[_Union[ConfidenceInterval, _Mapping]] = ..., teacher_pcoc: _Optional[_Union[ConfidenceInterval, _Mapping]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., shadow_dropped_rows: _Optional[int] = ...) -> None: ...

class SubmitFeedbackRequest(_message.Message):
    __slots__ = ("row_ids", "labels")
    ROW_IDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    row_ids: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, row_ids: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[float]] = ...) -> None: ...

class SubmitFeedbackResponse(_message.Message):
    __slots__ = ("matched", "unknown")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    UNKNOWN_FIELD_NUMBER: _ClassVar[int]
    matched: int
    unknown: int
    def __init__(self, matched: _Optional[int] = ..., unknown: _Optional[int] = ...) -> None: ...

class FlushExposureLogRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FlushExposureLogResponse(_message.Message):
    __slots__ = ("rows", "dataset", "partitions")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    rows: int
    dataset: str
    partitions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, rows: _Optional[int] = ..., dataset: _Optional[str] = ..., partitions: _Optional[_Iterable[str]] = ...) -> None: ...
