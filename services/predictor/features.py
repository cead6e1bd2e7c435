"""Requests → validated named columns: the fields the arms need, the cohort key and optional row ids.

Both protocols end in the same `RequestColumns`:
* V2 (REST JSON, REST binary, gRPC contents, gRPC raw): one input tensor per field, shape ``[B]``
  or ``[B, 1]``; categorical fields, the cohort key and row ids as BYTES or integers, numerical
  fields as FP32/FP64 or integers.
* V1 REST: ``{"instances": [{"<field>": value, ...}, ...]}``, one object per row.

Every problem is an `InvalidArgumentError` naming the field: a missing or unknown field, a wrong
datatype or shape, NaN/inf or null in a numerical field, a null cohort key or row id, an empty or
oversized batch, undecodable bytes. A null categorical value is a missing value, encoded like the
training data's (`<MISSING>`). Numerical values stay raw here; the arm applies its transform.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import chain
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from services.common.errors import InvalidArgumentError

INTEGER_TYPES = frozenset({"INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64"})
FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})
TEXT_TYPES = frozenset({"BYTES"}) | INTEGER_TYPES
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

    def input_types(self) -> list[dict[str, Any]]:
        """The V2 model metadata of the inputs."""
        text = [{"name": n, "datatype": "BYTES", "shape": [-1]} for n in (*self.categorical, self.cohort_key)
                if n not in self.numerical]
        numbers = [{"name": n, "datatype": "FP32", "shape": [-1]} for n in self.numerical]
        seen: set[str] = set()
        return [t for t in text + numbers if not (t["name"] in seen or seen.add(t["name"]))]


@dataclass(frozen=True)
class RequestColumns:
    """One request's rows: text columns as large_string (nulls = missing), numbers as float64."""

    rows: int
    text: Mapping[str, pa.Array]  # categorical fields
    numbers: Mapping[str, np.ndarray]
    cohort: pa.Array  # large_string, no nulls
    row_ids: pa.Array | None  # large_string, no nulls; None: generated from the request id


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


def _number_column(name: str, values: np.ndarray | pa.Array) -> np.ndarray:
    """Finite float64 values; null, NaN, infinity, text and booleans are refused."""
    if isinstance(values, pa.Array):
        if values.null_count:
            raise InvalidArgumentError("values must not be null (send 0 for a missing value, as training does)",
                                       field=name)
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
            raise InvalidArgumentError(f"values must be numbers, got {values.type}", field=name)
        values = values.to_numpy(zero_copy_only=False)
    if values.dtype.kind not in "iuf":
        raise InvalidArgumentError(f"values must be numbers, got {values.dtype}", field=name)
    numbers = values.astype(np.float64)
    if not np.isfinite(numbers).all():
        raise InvalidArgumentError("values must be finite (no NaN or infinity)", field=name)
    return numbers


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
    numbers = {n: _number_column(n, columns[n]) for n in schema.numerical}
    text = {n: _text_column(n, columns[n], allow_nulls=True) for n in schema.categorical if n not in numbers}
    cohort = _text_column(schema.cohort_key, columns[schema.cohort_key], allow_nulls=False)
    row_ids = None
    if schema.row_id_field in columns:
        row_ids = _text_column(schema.row_id_field, columns[schema.row_id_field], allow_nulls=False)
        if pc.max(pc.utf8_length(row_ids)).as_py() > MAX_ID_CHARS:
            raise InvalidArgumentError(f"row ids must have at most {MAX_ID_CHARS} characters",
                                       field=schema.row_id_field)
    return RequestColumns(rows=rows, text=text, numbers=numbers, cohort=cohort, row_ids=row_ids)


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
                if values.dtype.kind not in kinds or values.ndim != 1:
                    raise InvalidArgumentError(f"datatype {datatype} does not match the data ({values.dtype})",
                                               field=name)
    except InvalidArgumentError:
        raise
    except Exception as exc:  # noqa: BLE001 - undecodable caller data (struct, Arrow, numpy errors)
        raise InvalidArgumentError(f"cannot decode the {datatype} data: {exc}", field=name) from exc
    if len(values) != rows:
        raise InvalidArgumentError(f"shape says {rows} values, the data holds {len(values)}", field=name)
    return values


def v2_columns(inputs: Sequence[Any], schema: RequestSchema) -> RequestColumns:
    """Columns of a V2 request's inputs (kserve `InferInput`s)."""
    if not inputs:
        raise InvalidArgumentError("the request has no inputs", field="inputs")
    columns: dict[str, pa.Array | np.ndarray] = {}
    rows = None
    for infer_input in inputs:
        name = infer_input.name
        if not isinstance(name, str) or not name:
            raise InvalidArgumentError("every input needs a name", field="inputs")
        if name in columns:
            raise InvalidArgumentError("input given twice", field=field_name(name))
        if name not in schema.known:
            raise InvalidArgumentError(f"unknown field {name!r} (the model takes {sorted(schema.known)})",
                                       field=field_name(name))
        count = _rows_of_shape(name, infer_input.shape)
        if rows is not None and count != rows:
            raise InvalidArgumentError(f"has {count} rows, other inputs {rows}", field=name)
        rows = count
        if rows > schema.max_rows:
            raise InvalidArgumentError(f"the batch has {rows} rows, more than the limit {schema.max_rows}",
                                       field=name)
        columns[name] = _v2_values(infer_input, count, numeric=name in schema.numerical)
    return _assemble(schema, columns, rows or 0)


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
    try:
        table = pa.Table.from_pylist(instances)
    except Exception as exc:  # noqa: BLE001 - the caller's JSON: name the field that did not convert
        raise _v1_error(instances, exc) from exc
    columns: dict[str, pa.Array | np.ndarray] = {n: table.column(n).combine_chunks() for n in table.column_names}
    return _assemble(schema, columns, table.num_rows)


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
