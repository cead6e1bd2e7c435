"""Requests → validated named columns: the fields the arms need, the cohort key and optional row ids.

Both protocols end in the same `RequestColumns`:
* V2 (REST JSON, REST binary, gRPC contents, gRPC raw): one input tensor per field, shape ``[B]``
  or ``[B, 1]``; categorical fields, the cohort key and row ids as BYTES or integers, numerical
  fields as FP32/FP64 or integers.
* V1 REST: ``{"instances": [{"<field>": value, ...}, ...]}``, one object per row.

Every problem is an `InvalidArgumentError` naming the field: a missing or unknown field, a wrong
datatype or shape, infinity in a numerical field, a null cohort key or row id, an empty or
oversized batch, undecodable bytes. A null categorical value is a missing value, encoded like the
training data's (`<MISSING>`). A numerical value that is null, NaN, or (V1) absent from a row is a
missing value only for a field some arm's checkpoint has a missing indicator for
(`RequestSchema.missing_numerical`: its feature spec has ``<field>__missing``); for any other field
it is the caller's mistake. Numerical values stay raw here (NaN = missing); the arm applies its
transform, fill and indicator.

The common V2 request (every input a flat list: BYTES for text fields, numbers for numerical ones)
is converted in bulk: one Arrow array of all categorical values, one float64 block of all numbers;
anything else takes the per-input path, which also finds the field at fault.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.errors import InvalidArgumentError
from services.predictor import wire

INTEGER_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
TEXT_ONLY = frozenset({"BYTES"})
TEXT_TYPES = TEXT_ONLY | INTEGER_TYPES
NUMBER_TYPES = FLOAT_TYPES | INTEGER_TYPES
_NUMPY = {"INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "UINT8": np.uint8,
          "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16, "FP32": np.float32,
          "FP64": np.float64}
V1_KEYS = frozenset({"instances", "id"})
MAX_ID_CHARS = 256


@dataclass(frozen=True)
class RequestSchema:
    """What a request must carry: the arms' fields, the cohort key, and optionally row ids."""

    categorical: tuple[str, ...]
    numerical: tuple[str, ...]
    cohort_key: str
    row_id_field: str
    max_rows: int
    missing_numerical: frozenset[str] = frozenset()  # numerical fields where null/NaN means "missing"

    def __post_init__(self) -> None:
        names = [*self.categorical, *self.numerical, self.cohort_key, self.row_id_field]
        duplicated = sorted({n for n in names if names.count(n) > 1} - {self.cohort_key})
        if duplicated or self.row_id_field in (*self.categorical, *self.numerical):
            raise ValueError(f"request columns are named twice: {duplicated or [self.row_id_field]}")

    @cached_property
    def text_fields(self) -> frozenset[str]:
        return frozenset({*self.categorical, self.cohort_key, self.row_id_field})

    @cached_property
    def known(self) -> frozenset[str]:
        return self.text_fields | frozenset(self.numerical)

    @cached_property
    def required(self) -> tuple[str, ...]:
        return (*self.categorical, *self.numerical, self.cohort_key)

    def input_types(self) -> list[dict[str, Any]]:
        """The V2 model metadata of the inputs."""
        text = [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in (*self.categorical, self.cohort_key)
                if n not in self.numerical]
        numbers = [{"name": n, "datatype": "FP32", "shape": [-1]} for n in self.numerical]
        seen: set[str] = set()
        return [t for t in text + numbers if not (t["name"] in seen or seen.add(t["name"]))]


@dataclass(frozen=True)
class RequestColumns:
    """One request's rows, as two blocks (so an arm encodes all fields with a few array calls).

    categorical: the ``C·B`` values of the C categorical fields, field after field (``categorical_fields``
    order), large_string, nulls = missing. numerical: ``[N, B]`` float64 raw values (``numerical_fields``
    order), NaN = missing (only in `RequestSchema.missing_numerical` fields).
    """

    rows: int
    categorical_fields: tuple[str, ...]
    categorical: pa.Array
    numerical_fields: tuple[str, ...]
    numerical: np.ndarray
    cohort: pa.Array  # large_string, no nulls
    row_ids: pa.Array | None  # large_string, no nulls; None: generated from the request id

    @cached_property
    def text(self) -> dict[str, pa.Array]:
        """Each categorical field's values (zero-copy slices of the block)."""
        return {f: self.categorical.slice(i * self.rows, self.rows) for i, f in enumerate(self.categorical_fields)}

    @cached_property
    def numbers(self) -> dict[str, np.ndarray]:
        return {f: self.numerical[i] for i, f in enumerate(self.numerical_fields)}


def field_name(name: Any) -> str:
    """A caller-supplied name fit to report as the field at fault: printable ASCII (others escaped).

    The field travels in a gRPC trailer, and metadata values must be printable ASCII.
    """
    text = name if isinstance(name, str) else repr(name)
    if all(" " <= c <= "~" for c in text):
        return text
    return text.encode("unicode_escape").decode("ascii").replace("\x7f", "\\x7f")


def check_request_id(request_id: Any) -> str | None:
    if request_id in (None, ""):
        return None
    if not isinstance(request_id, str) or len(request_id) > MAX_ID_CHARS:
        raise InvalidArgumentError(f"id must be a string of at most {MAX_ID_CHARS} characters", field="id")
    return request_id


# ---- column checks shared by both protocols ----------------------------------------------------
def _text_column(name: str, values: pa.Array | np.ndarray, allow_nulls: bool) -> pa.Array:
    """Text or integer values as large_string; floats, booleans and nested values are refused."""
    if isinstance(values, np.ndarray):
        if values.dtype.kind not in "iu":
            raise InvalidArgumentError(f"values must be text or integers, got {values.dtype}", field=name)
        values = pa.array(values)
    kind = values.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        try:
            values = pc.cast(values, pa.large_string())
        except pa.ArrowInvalid as exc:
            raise InvalidArgumentError("values are not valid UTF-8 text", field=name) from exc
    elif pa.types.is_integer(kind) or pa.types.is_null(kind):
        values = pc.cast(pc.cast(values, pa.string()), pa.large_string())
    elif pa.types.is_string(kind):
        values = pc.cast(values, pa.large_string())
    elif not pa.types.is_large_string(kind):
        raise InvalidArgumentError(f"values must be text or integers, got {kind}", field=name)
    if values.null_count and not allow_nulls:
        raise InvalidArgumentError("values must not be null", field=name)
    return values


def _number_column(name: str, values: np.ndarray | pa.Array, missing_allowed: bool) -> np.ndarray:
    """float64 values; NaN (null or NaN) only where `missing_allowed`; infinity, text and booleans are refused."""
    if isinstance(values, pa.Array):
        if values.null_count and not missing_allowed:
            raise InvalidArgumentError("values must not be null (this field has no missing indicator in the "
                                       "checkpoints, so a missing value cannot be told from a number)", field=name)
        if pa.types.is_null(values.type):
            return np.full(len(values), np.nan)
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
            raise InvalidArgumentError(f"values must be numbers, got {values.type}", field=name)
        values = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    if values.dtype.kind not in "iuf":
        raise InvalidArgumentError(f"values must be numbers, got {values.dtype}", field=name)
    numbers = values.astype(np.float64)
    _check_finite(name, numbers, missing_allowed)
    return numbers


def _check_finite(name: str, numbers: np.ndarray, missing_allowed: bool) -> None:
    if missing_allowed:
        if np.isinf(numbers).any():
            raise InvalidArgumentError("values must not be infinite", field=name)
    elif not np.isfinite(numbers).all():
        raise InvalidArgumentError("values must be finite (no NaN or infinity: this field has no missing "
                                   "indicator in the checkpoints)", field=name)


def _assemble(schema: RequestSchema, columns: Mapping[str, pa.Array | np.ndarray], rows: int) -> RequestColumns:
    unknown = sorted(set(columns) - schema.known)
    if unknown:
        raise InvalidArgumentError(f"unknown field {unknown[0]!r} (the model takes {sorted(schema.known)})",
                                   field=field_name(unknown[0]))
    required = [*schema.categorical, *schema.numerical, schema.cohort_key]
    missing = [n for n in required if n not in columns]
    if missing:
        raise InvalidArgumentError(f"field {missing[0]!r} is missing", field=missing[0])
    if rows == 0:
        raise InvalidArgumentError("the batch is empty", field="inputs")
    if rows > schema.max_rows:
        raise InvalidArgumentError(f"the batch has {rows} rows, more than the limit {schema.max_rows}",
                                   field="inputs")
    numerical = np.empty((len(schema.numerical), rows), dtype=np.float64)
    for index, name in enumerate(schema.numerical):
        numerical[index] = _number_column(name, columns[name], name in schema.missing_numerical)
    text = [_text_column(n, columns[n], allow_nulls=True) for n in schema.categorical]
    categorical = pa.concat_arrays(text) if text else pa.array([], pa.large_string())
    cohort = _text_column(schema.cohort_key, columns[schema.cohort_key], allow_nulls=False)
    row_ids = None
    if schema.row_id_field in columns:
        row_ids = _row_ids(schema, _text_column(schema.row_id_field, columns[schema.row_id_field], allow_nulls=False))
    return RequestColumns(rows, schema.categorical, categorical, schema.numerical, numerical, cohort, row_ids)


def _row_ids(schema: RequestSchema, row_ids: pa.Array) -> pa.Array:
    if pc.max(pc.utf8_length(row_ids)).as_py() > MAX_ID_CHARS:
        raise InvalidArgumentError(f"row ids must have at most {MAX_ID_CHARS} characters", field=schema.row_id_field)
    return row_ids


# ---- V2 ----------------------------------------------------------------------------------------
def _rows_of_shape(name: str, shape: Any) -> int:
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 2
            or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape) or min(shape) < 0
            or (len(shape) == 2 and shape[1] != 1)):
        raise InvalidArgumentError(f"shape must be [B] or [B, 1], got {list(shape) if isinstance(shape, (list, tuple)) else shape}",
                                   field=name)
    return int(shape[0])


def _v2_values(infer_input: Any, rows: int, numeric: bool) -> pa.Array | np.ndarray:
    """The input's values as one flat array of `rows` values: text as Arrow, numbers as numpy.

    Raw (binary) data is decoded by its datatype; JSON and gRPC-content lists must hold what the
    datatype says: text (or null) for BYTES, integers for INT*/UINT*, numbers for FP*.
    """
    name, datatype = infer_input.name, infer_input.datatype
    if numeric and datatype not in NUMBER_TYPES or not numeric and datatype not in TEXT_TYPES:
        allowed = NUMBER_TYPES if numeric else TEXT_TYPES
        raise InvalidArgumentError(f"datatype {datatype!r} is not one of {sorted(allowed)}", field=name)
    raw = getattr(infer_input, "_raw_data", None)
    try:
        if raw is not None:
            if datatype == "BYTES":
                from kserve.protocol.infer_type import deserialize_bytes_tensor

                values: pa.Array | np.ndarray = pa.array(deserialize_bytes_tensor(raw).tolist(), pa.large_binary())
            else:
                values = np.frombuffer(raw, dtype=_NUMPY[datatype])
        else:
            data = infer_input.data
            if isinstance(data, np.ndarray):
                data = data.tolist()
            if not isinstance(data, list):
                raise InvalidArgumentError("data must be a list", field=name)
            if data and isinstance(data[0], list):  # [[v], [v], ...] for shape [B, 1]
                if not all(isinstance(d, list) and len(d) == 1 for d in data):
                    raise InvalidArgumentError("nested data must hold one value per row", field=name)
                data = list(chain.from_iterable(data))
            if datatype == "BYTES":
                text = [v for v in data[:1] if v is not None]
                values = pa.array(data, pa.large_binary() if text and isinstance(text[0], bytes) else pa.large_string())
            else:
                values = np.asarray(data) if data else np.zeros(0, _NUMPY.get(datatype, np.float64))
                kinds = "iu" if datatype in INTEGER_TYPES else "iuf"
                if values.dtype.kind == "O" and None in data:  # JSON nulls: Arrow keeps them as nulls
                    nullable = pa.array(data)
                    if pa.types.is_null(nullable.type) or (pa.types.is_integer(nullable.type) if kinds == "iu" else (
                            pa.types.is_integer(nullable.type) or pa.types.is_floating(nullable.type))):
                        values = nullable
                if isinstance(values, np.ndarray) and (values.dtype.kind not in kinds or values.ndim != 1):
                    raise InvalidArgumentError(f"datatype {datatype} does not match the data ({values.dtype})",
                                               field=name)
    except InvalidArgumentError:
        raise
    except Exception as exc:  # noqa: BLE001 - undecodable caller data (struct, Arrow, numpy errors)
        raise InvalidArgumentError(f"cannot decode the {datatype} data: {exc}", field=name) from exc
    if len(values) != rows:
        raise InvalidArgumentError(f"shape says {rows} values, the data holds {len(values)}", field=name)
    return values


def v2_columns(inputs: Sequence[Any], schema: RequestSchema, typed_contents: bool = False) -> RequestColumns:
    """Columns of a V2 request's inputs (kserve `InferInput`s).

    ``typed_contents``: the lists come from gRPC's typed contents (numbers are numbers of the stated
    datatype), so the numbers of all inputs convert in one call.
    """
    if not inputs:
        raise InvalidArgumentError("the request has no inputs", field="inputs")
    found: dict[str, Any] = {}
    rows = None
    for infer_input in inputs:  # the inputs' names and shapes (per field, never per row)
        name = infer_input.name
        if type(name) is not str or name not in schema.known or name in found:
            _refuse_name(name, found, schema)
        shape = infer_input.shape
        if type(shape) is list and len(shape) == 1 and type(shape[0]) is int and shape[0] >= 0:
            count = shape[0]  # the usual [B]; anything else is checked in full
        else:
            count = _rows_of_shape(name, shape)
        data = infer_input.data
        if type(data) is list and getattr(infer_input, "_raw_data", None) is None and len(data) != count:
            raise InvalidArgumentError(f"shape says {count} values, the data holds {len(data)}", field=name)
        if rows is not None and count != rows:
            raise InvalidArgumentError(f"has {count} rows, other inputs {rows}", field=name)
        rows = count
        if rows > schema.max_rows:
            raise InvalidArgumentError(f"the batch has {rows} rows, more than the limit {schema.max_rows}",
                                       field=name)
        found[name] = infer_input
    columns = _bulk_v2(found, schema, rows or 0, typed_contents)
    if columns is not None:
        return columns
    values = {name: _v2_values(i, rows or 0, numeric=name in schema.numerical) for name, i in found.items()}
    return _assemble(schema, values, rows or 0)


def _refuse_name(name: Any, found: Mapping[str, Any], schema: RequestSchema) -> None:
    if not isinstance(name, str) or not name:
        raise InvalidArgumentError("every input needs a name", field="inputs")
    if name in found:
        raise InvalidArgumentError("input given twice", field=field_name(name))
    raise InvalidArgumentError(f"unknown field {name!r} (the model takes {sorted(schema.known)})",
                               field=field_name(name))


def _flat_list(infer_input: Any, rows: int, datatypes: frozenset[str]) -> list | None:
    """The input's data if it is a plain list of `rows` values of one of `datatypes` (else None)."""
    data = infer_input.data
    if (infer_input.datatype not in datatypes or getattr(infer_input, "_raw_data", None) is not None
            or type(data) is not list or len(data) != rows):
        return None
    return data


def _bulk_v2(found: Mapping[str, Any], schema: RequestSchema, rows: int, typed_contents: bool) -> RequestColumns | None:
    """The columns of a request whose inputs are all plain lists, converted in bulk; None for anything else
    (raw data, nested lists, integer-typed text, a missing field, a value of the wrong kind, ...), which
    the per-input path then converts or refuses naming the field."""
    if not rows or any(name not in found for name in schema.required):
        return None
    text_lists = [_flat_list(found[n], rows, TEXT_ONLY) for n in schema.categorical]
    number_lists = [_flat_list(found[n], rows, NUMBER_TYPES) for n in schema.numerical]
    cohort = _flat_list(found[schema.cohort_key], rows, TEXT_ONLY)
    row_ids = _flat_list(found[schema.row_id_field], rows, TEXT_ONLY) if schema.row_id_field in found else []
    if None in text_lists or None in number_lists or cohort is None or row_ids is None:
        return None
    if not typed_contents:  # JSON lists: each must hold numbers of its datatype's kind
        for name, data in zip(schema.numerical, number_lists):
            try:
                values = np.asarray(data)
            except ValueError:  # ragged nesting, e.g. a list among the numbers
                return None
            if values.dtype.kind not in ("iu" if found[name].datatype in INTEGER_TYPES else "iuf") or values.ndim != 1:
                return None
    return _bulk_columns(schema, rows, text_lists, number_lists, cohort, row_ids or None)


class _JsonInput:
    """A V2 JSON input as `_bulk_v2` reads it (name, datatype, data; never raw bytes)."""

    __slots__ = ("data", "datatype", "name")
    _raw_data = None

    def __init__(self, name: str, datatype: Any, data: list) -> None:
        self.name, self.datatype, self.data = name, datatype, data


JSON_INPUT_KEYS = frozenset({"name", "shape", "datatype", "data"})
JSON_REQUEST_KEYS = frozenset({"id", "inputs"})


def json_columns(payload: Any, schema: RequestSchema) -> RequestColumns | None:
    """The columns of a parsed V2 JSON body that is the common request: ``{"id"?, "inputs": [...]}``, every input
    exactly ``{name, shape: [B], datatype, data: [B values]}`` and each field of the schema once; read with the
    same checks as KServe's path (`_bulk_v2`). None for anything else (parameters, requested outputs, nested
    data, a missing or unknown field, a wrong value...), which then takes KServe's path and its errors."""
    if type(payload) is not dict or not payload.keys() <= JSON_REQUEST_KEYS:
        return None
    inputs = payload.get("inputs")
    if type(inputs) is not list or not inputs:
        return None
    found: dict[str, _JsonInput] = {}
    rows = -1
    for item in inputs:
        if type(item) is not dict or item.keys() != JSON_INPUT_KEYS:
            return None
        name, shape, data = item["name"], item["shape"], item["data"]
        if (type(name) is not str or name in found or type(item["datatype"]) is not str
                or type(shape) is not list or len(shape) != 1 or type(data) is not list or shape[0] != len(data)
                or (rows >= 0 and len(data) != rows)):
            return None
        rows = len(data)
        found[name] = _JsonInput(name, item["datatype"], data)
    if not 0 < rows <= schema.max_rows or not found.keys() <= schema.known:
        return None
    return _bulk_v2(found, schema, rows, typed_contents=False)


def grpc_columns(message: Any, schema: RequestSchema) -> RequestColumns | None:
    """The columns of a gRPC `ModelInferRequest` whose tensors are all ``[B]`` typed contents, read straight
    from the message (no per-input lists); None for anything else (the per-input path then reads it).

    One pass over the tensors reads each one's name, shape, datatype and contents once (message fields are
    read through protobuf accessors, each a call: at batch 1 they are most of this function's time)."""
    if message.raw_input_contents:
        return None
    known = schema.known
    text: dict[str, Any] = {}  # name -> its BYTES contents (None if another datatype)
    numbers: dict[str, Any] = {}  # name -> its number contents (None if not a number datatype)
    rows = -1
    for tensor in message.inputs:
        name, shape = tensor.name, tensor.shape
        if len(shape) != 1 or name in text or name not in known:
            return None
        if shape[0] != rows:
            if rows >= 0:
                return None
            rows = shape[0]
        datatype, contents = tensor.datatype, tensor.contents
        if datatype == "BYTES":
            text[name], numbers[name] = contents.bytes_contents, None
        else:
            field = _GRPC_NUMBER_CONTENTS.get(datatype)
            text[name], numbers[name] = None, None if field is None else getattr(contents, field)
    if not 0 < rows <= schema.max_rows:
        return None
    try:
        text_lists = [text[n] for n in schema.categorical]
        number_lists = [numbers[n] for n in schema.numerical]
        cohort = text[schema.cohort_key]
    except KeyError:  # a required field is missing
        return None
    given_row_ids = schema.row_id_field in text
    row_ids = text[schema.row_id_field] if given_row_ids else ()
    # Identity, not `None in text_lists`: that compares None with each container by value, which turns
    # every container into a list first (a third of this function's time at batch 256).
    if cohort is None or row_ids is None or any(v is None for v in chain(text_lists, number_lists)):
        return None
    if any(len(v) != rows for v in text_lists) or any(len(v) != rows for v in number_lists) or len(cohort) != rows or (
            given_row_ids and len(row_ids) != rows):
        return None
    return _bulk_columns(schema, rows, text_lists, number_lists, cohort, row_ids if given_row_ids else None)


_GRPC_NUMBER_CONTENTS = {"FP32": "fp32_contents", "FP64": "fp64_contents", "INT8": "int_contents",
                         "INT16": "int_contents", "INT32": "int_contents", "INT64": "int64_contents",
                         "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
                         "UINT64": "uint64_contents"}


def _bulk_columns(schema: RequestSchema, rows: int, text_lists: Sequence[Sequence], number_lists: Sequence[Sequence],
                  cohort_list: Sequence, row_id_list: Sequence | None) -> RequestColumns | None:
    """Columns from each field's values (sequences of numbers, of text or bytes), converted in one call per
    kind; None if a value does not convert or a number is not allowed (the per-input path says why)."""
    try:
        categorical = _text_array(list(chain.from_iterable(text_lists)))
        cohort = _text_array(list(cohort_list))
        row_ids = None if row_id_list is None else _text_array(list(row_id_list))
        numerical = np.fromiter(chain.from_iterable(number_lists), dtype=np.float64,
                                count=len(number_lists) * rows).reshape(-1, rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        return None
    return _checked_columns(schema, rows, categorical, numerical, cohort, row_ids)


def _checked_columns(schema: RequestSchema, rows: int, categorical: pa.Array, numerical: np.ndarray, cohort: pa.Array,
                     row_ids: pa.Array | None) -> RequestColumns | None:
    """The columns, or None if a cohort key or row id is null or a number is not allowed (the per-input path
    says which)."""
    if cohort.null_count or (row_ids is not None and row_ids.null_count):
        return None
    if not np.isfinite(numerical).all():
        missing_ok = np.array([n in schema.missing_numerical for n in schema.numerical], dtype=bool)
        if np.isinf(numerical).any() or np.isnan(numerical[~missing_ok]).any():
            return None
    if row_ids is not None:
        row_ids = _row_ids(schema, row_ids)
    return RequestColumns(rows, schema.categorical, categorical, schema.numerical, numerical, cohort, row_ids)


def wire_columns(raw: bytes, schema: RequestSchema) -> RequestColumns | None:
    """The columns of a serialized gRPC `ModelInferRequest` whose tensors are all ``[B]`` typed contents, read
    from its bytes by `wire`'s compiled loops (no Python object per value); None for anything else (the
    protobuf path then reads it, and names the field at fault)."""
    buffer = np.frombuffer(raw, dtype=np.uint8)
    status, table = wire.read_tensors(buffer)
    if status != wire.OK or not len(table):
        return None
    rows, key = wire.layout(buffer, table)
    if not 0 < rows <= schema.max_rows:
        return None
    key = key.tobytes()
    found = (_wire_layout(key, len(table), schema) if len(key) <= MAX_LAYOUT_KEY_BYTES
             else _wire_layout.__wrapped__(key, len(table), schema))
    if found is None:
        return None
    status, offsets, data, numerical = wire.read_values(buffer, table, found.text_tensors, found.number_tensors,
                                                        found.number_fields, rows)
    if status != wire.OK:
        return None
    try:
        text = _text_block(offsets, data)
    except pa.ArrowInvalid:  # not UTF-8
        return None
    fields = len(schema.categorical)
    row_ids = text.slice((fields + 1) * rows, rows) if found.row_ids else None
    return _checked_columns(schema, rows, text.slice(0, fields * rows), numerical, text.slice(fields * rows, rows),
                            row_ids)


MAX_LAYOUT_KEY_BYTES = 16_384  # longer layouts (very long names) are worked out for each request, not kept


@dataclass(frozen=True)
class _WireLayout:
    """Where a request layout's fields are: table rows of the text fields (categorical, cohort key, row ids if
    given) and of the numerical fields, and which contents field holds each one's numbers."""

    text_tensors: np.ndarray
    number_tensors: np.ndarray
    number_fields: np.ndarray
    row_ids: bool


@lru_cache(maxsize=128)
def _wire_layout(key: bytes, tensors: int, schema: RequestSchema) -> _WireLayout | None:
    """The layout of `tensors` tensors named and typed as `key` (`wire.layout`) says, or None unless it is the
    common request: each field of the schema once, text as BYTES, numbers as a number datatype, nothing else."""
    parts = key.split(b"\0")[:-1]
    if len(parts) != 2 * tensors:  # a NUL inside a name or datatype
        return None
    try:
        names, datatypes = [p.decode() for p in parts[::2]], [p.decode() for p in parts[1::2]]
    except UnicodeDecodeError:
        return None
    index = {name: i for i, name in enumerate(names)}
    if len(index) != tensors or not set(index) <= schema.known or any(n not in index for n in schema.required):
        return None
    text = [*schema.categorical, schema.cohort_key] + ([schema.row_id_field] if schema.row_id_field in index else [])
    number_fields = [wire.CONTENTS_FIELD.get(datatypes[index[n]], -1) for n in schema.numerical]
    if any(datatypes[index[n]] != "BYTES" for n in text) or -1 in number_fields:
        return None
    arrays = [np.array([index[n] for n in text], dtype=np.int64),
              np.array([index[n] for n in schema.numerical], dtype=np.int64), np.array(number_fields, dtype=np.int64)]
    for array in arrays:  # shared by every request of the layout
        array.flags.writeable = False
    return _WireLayout(*arrays, schema.row_id_field in index)


def _text_block(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """A large_string array over the buffers (no copy), its bytes checked to be UTF-8."""
    text = pa.Array.from_buffers(pa.large_string(), len(offsets) - 1, [None, pa.py_buffer(offsets), pa.py_buffer(data)])
    text.validate(full=True)
    return text


def _text_array(values: Sequence) -> pa.Array:
    """large_string of bytes or str values (or None); bytes must be UTF-8 (else ArrowInvalid). Built as binary
    (str values are encoded), viewed as text and validated once over the whole buffer: about twice as fast
    as building text from bytes value by value."""
    text = pa.array(values, pa.large_binary()).view(pa.large_string())
    text.validate(full=True)
    return text


# ---- V1 ----------------------------------------------------------------------------------------
def v1_columns(payload: Any, schema: RequestSchema) -> RequestColumns:
    """Columns of a V1 body ``{"instances": [{field: value, ...}, ...], "id": optional}``."""
    if not isinstance(payload, dict):
        raise InvalidArgumentError("the body must be a JSON object with 'instances'", field="body")
    extra = sorted(set(payload) - V1_KEYS)
    if extra:
        raise InvalidArgumentError(f"unknown field {extra[0]!r} (a V1 body has {sorted(V1_KEYS)})",
                                   field=field_name(extra[0]))
    instances = payload.get("instances")
    if not isinstance(instances, list):
        raise InvalidArgumentError("'instances' must be a list of objects", field="instances")
    if not instances:
        raise InvalidArgumentError("the batch is empty", field="instances")
    if len(instances) > schema.max_rows:
        raise InvalidArgumentError(f"the batch has {len(instances)} rows, more than the limit {schema.max_rows}",
                                   field="instances")
    try:  # a struct over the keys of all rows (Table.from_pylist would take the first row's keys only)
        rows = pa.array(instances)
    except Exception as exc:  # noqa: BLE001 - the caller's JSON: name the field that did not convert
        raise _v1_error(instances, exc) from exc
    if not pa.types.is_struct(rows.type):
        raise InvalidArgumentError("every instance must be a JSON object", field="instances")
    if rows.null_count:
        raise InvalidArgumentError("every instance must be a JSON object, not null", field="instances")
    columns: dict[str, pa.Array | np.ndarray] = {rows.type.field(i).name: rows.field(i)
                                                 for i in range(rows.type.num_fields)}
    for name in schema.missing_numerical - set(columns):  # absent from every row: missing in every row
        columns[name] = pa.nulls(len(rows), pa.float64())
    return _assemble(schema, columns, len(rows))


def _v1_error(instances: list[Any], exc: Exception) -> InvalidArgumentError:
    """Which field of a V1 body failed to convert (only on the error path: it looks at each row)."""
    if not all(isinstance(row, dict) for row in instances):
        return InvalidArgumentError("every instance must be a JSON object", field="instances")
    for name in sorted(set().union(*instances), key=str):
        try:
            pa.array([row.get(name) for row in instances])
        except Exception as field_exc:  # noqa: BLE001
            return InvalidArgumentError(f"values have mixed or unsupported types: {field_exc}", field=field_name(name))
    return InvalidArgumentError(f"instances do not form a table: {exc}", field="instances")
