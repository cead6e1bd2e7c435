from . import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class StartProjectionRequest(_message.Message):
    __slots__ = ("teacher", "student_name", "width", "fields", "seed", "vocab_hash", "vocab_sizes", "request_id")
    class VocabSizesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    TEACHER_FIELD_NUMBER: _ClassVar[int]
    STUDENT_NAME_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    FIELDS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    VOCAB_HASH_FIELD_NUMBER: _ClassVar[int]
    VOCAB_SIZES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    teacher: _common_pb2.CheckpointRef
    student_name: str
    width: int
    fields: _containers.RepeatedScalarFieldContainer[str]
    seed: int
    vocab_hash: str
    vocab_sizes: _containers.ScalarMap[str, int]
    request_id: str
    def __init__(self, teacher: _Optional[_Union[_common_pb2.CheckpointRef, _Mapping]] = ..., student_name: _Optional[str] = ..., width: _Optional[int] = ..., fields: _Optional[_Iterable[str]] = ..., seed: _Optional[int] = ..., vocab_hash: _Optional[str] = ..., vocab_sizes: _Optional[_Mapping[str, int]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartProjectionResponse(_message.Message):
    __slots__ = ("operation",)
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    operation: _common_pb2.Operation
    def __init__(self, operation: _Optional[_Union[_common_pb2.Operation, _Mapping]] = ...) -> None: ...
