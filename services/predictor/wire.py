"""The common V2 gRPC request read straight from its wire bytes into column buffers (compiled, numba).

Reading a `ModelInferRequest` through protobuf's Python API makes one Python object per value: a
batch of 256 Criteo rows is 6,656 `bytes` objects, then an Arrow array built from them: with the vocabulary
lookup, most of the request's time in the predictor beside the model forwards. The request's bytes already hold every value in order, so
the compiled loops here walk the message once and copy the text values into one Arrow large_string
block (offsets and bytes, no object per value) and the numbers into one float64 block.

Only the common request is read here: every input ``[B]`` typed contents (BYTES for text, a number
datatype for numbers), no `raw_input_contents`. Anything else, or anything malformed, returns None
and the request takes the protobuf path (`features.grpc_columns`, `features.v2_columns`), which
reads every form and names the field at fault. The tests hold this reader to protobuf's own parse
on generated messages.

Wire format (https://protobuf.dev/programming-guides/encoding/): a field is a varint key
(number << 3 | wire type) and a value: 0 varint, 1 8 bytes, 2 varint length + bytes, 5 4 bytes.
"""

from __future__ import annotations

import numpy as np
from numba import uint64

from services.predictor.lookup_kernel import compiled, little_endian

VARINT, FIXED64, LENGTH_DELIMITED, FIXED32 = 0, 1, 2, 5
OK, FALLBACK = 0, 1
# ModelInferRequest fields
REQUEST_INPUTS, REQUEST_RAW_CONTENTS = 5, 7
# InferInputTensor fields
TENSOR_NAME, TENSOR_DATATYPE, TENSOR_SHAPE, TENSOR_CONTENTS = 1, 2, 3, 5
# InferTensorContents fields, by the datatype they hold
CONTENTS_BYTES = 8
CONTENTS_FIELD = {"INT8": 2, "INT16": 2, "INT32": 2, "INT64": 3, "UINT8": 4, "UINT16": 4, "UINT32": 4,
                  "UINT64": 5, "FP32": 6, "FP64": 7}
_INT32, _INT64, _UINT32, _UINT64, _FLOAT, _DOUBLE = 2, 3, 4, 5, 6, 7
# The columns of `read_tensors`' table.
NAME_START, NAME_END, DATATYPE_START, DATATYPE_END, DIMS, ROWS, CONTENTS_START, CONTENTS_END = range(8)
_UNSET = -1


@compiled()
def _varint(buf, pos, end):  # noqa: ANN001, ANN202 - numba infers the types
    """(value, position after it), or (0, -1) if the varint runs past `end` or over 10 bytes."""
    value = uint64(0)
    shift = 0
    while pos < end and shift < 64:
        byte = buf[pos]
        pos += 1
        value |= uint64(byte & 0x7F) << uint64(shift)
        if byte < 0x80:
            return value, pos
        shift += 7
    return uint64(0), -1


@compiled()
def _skip(buf, pos, end, wire_type):  # noqa: ANN001, ANN202
    """The position after a value of `wire_type` at `pos`, or -1 (a group, an unknown type, truncated)."""
    if wire_type == VARINT:
        _, pos = _varint(buf, pos, end)
        return pos
    if wire_type == FIXED64:
        return pos + 8 if pos + 8 <= end else -1
    if wire_type == FIXED32:
        return pos + 4 if pos + 4 <= end else -1
    if wire_type == LENGTH_DELIMITED:
        length, pos = _varint(buf, pos, end)
        if pos < 0 or length > uint64(end - pos):
            return -1
        return pos + np.int64(length)
    return -1


@compiled()
def _field(buf, pos, end):  # noqa: ANN001, ANN202
    """(field number, wire type, value start, value end, next position) of the field at `pos`; next = -1 if
    malformed. For a length-delimited field the value is its bytes (after the length)."""
    key, pos = _varint(buf, pos, end)
    if pos < 0 or key >> uint64(32):
        return 0, 0, 0, 0, -1
    number = np.int64(key >> uint64(3))
    wire_type = np.int64(key & uint64(7))
    if wire_type == LENGTH_DELIMITED:
        length, start = _varint(buf, pos, end)
        if start < 0 or length > uint64(end - start):
            return 0, 0, 0, 0, -1
        stop = start + np.int64(length)
        return number, wire_type, start, stop, stop
    stop = _skip(buf, pos, end, wire_type)
    return number, wire_type, pos, stop, stop


@compiled()
def read_tensors(buf):  # noqa: ANN001, ANN201
    """(status, ``[T, 8]`` int64 table) of a ModelInferRequest's T input tensors: where each one's name,
    datatype and contents are, its number of dimensions and its first dimension. FALLBACK for raw input
    contents, a malformed message, or a tensor field given twice (protobuf would merge or overwrite)."""
    end = len(buf)
    count = 0
    pos = 0
    while pos < end:  # count the tensors first: the table is allocated once
        number, wire_type, start, stop, pos = _field(buf, pos, end)
        if pos < 0 or number == REQUEST_RAW_CONTENTS:
            return FALLBACK, np.empty((0, 8), dtype=np.int64)
        if number == REQUEST_INPUTS:
            if wire_type != LENGTH_DELIMITED:
                return FALLBACK, np.empty((0, 8), dtype=np.int64)
            count += 1
    table = np.full((count, 8), _UNSET, dtype=np.int64)
    pos = 0
    row = 0
    while pos < end:
        number, wire_type, start, stop, pos = _field(buf, pos, end)
        if number != REQUEST_INPUTS:
            continue
        table[row, DIMS] = 0
        inner = start
        while inner < stop:
            field, kind, value_start, value_stop, inner = _field(buf, inner, stop)
            if inner < 0:
                return FALLBACK, table
            if field == TENSOR_NAME or field == TENSOR_DATATYPE or field == TENSOR_CONTENTS:
                column = NAME_START if field == TENSOR_NAME else (
                    DATATYPE_START if field == TENSOR_DATATYPE else CONTENTS_START)
                if kind != LENGTH_DELIMITED or table[row, column] != _UNSET:
                    return FALLBACK, table
                table[row, column] = value_start
                table[row, column + 1] = value_stop
            elif field == TENSOR_SHAPE:
                if kind == VARINT:  # one dimension, unpacked
                    value, _ = _varint(buf, value_start, value_stop)
                    if table[row, DIMS] == 0:
                        table[row, ROWS] = np.int64(value)
                    table[row, DIMS] += 1
                elif kind == LENGTH_DELIMITED:  # packed dimensions
                    at = value_start
                    while at < value_stop:
                        value, at = _varint(buf, at, value_stop)
                        if at < 0:
                            return FALLBACK, table
                        if table[row, DIMS] == 0:
                            table[row, ROWS] = np.int64(value)
                        table[row, DIMS] += 1
                else:
                    return FALLBACK, table
        row += 1
    return OK, table


@compiled()
def layout(buf, table):  # noqa: ANN001, ANN201
    """(rows, key) of a tensor table: the common first dimension when every tensor has a name, a datatype and
    one dimension of the same size (else -1), and the key, every tensor's name and datatype as
    ``name \\0 datatype \\0`` (the request's layout: the same for every request a client sends)."""
    count = len(table)
    rows = table[0, ROWS] if count else -1
    size = 0
    for t in range(count):
        if table[t, NAME_START] < 0 or table[t, DATATYPE_START] < 0 or table[t, DIMS] != 1 or table[t, ROWS] != rows:
            return -1, np.empty(0, dtype=np.uint8)
        size += table[t, NAME_END] - table[t, NAME_START] + table[t, DATATYPE_END] - table[t, DATATYPE_START] + 2
    key = np.empty(size, dtype=np.uint8)
    at = 0
    for t in range(count):
        for start, stop in ((table[t, NAME_START], table[t, NAME_END]), (table[t, DATATYPE_START], table[t, DATATYPE_END])):
            for k in range(start, stop):
                key[at] = buf[k]
                at += 1
            key[at] = 0
            at += 1
    return rows, key


@compiled()
def read_values(buf, table, text_tensors, number_tensors, number_fields, rows):  # noqa: ANN001, ANN201
    """(status, offsets, bytes, ``[N, rows]`` float64): `text_values` of the tensors in table rows `text_tensors`
    and `number_values` of those in `number_tensors` (one call: a compiled function's call costs microseconds)."""
    text_spans = np.zeros((len(text_tensors), 2), dtype=np.int64)
    for k in range(len(text_tensors)):
        if table[text_tensors[k], CONTENTS_START] >= 0:
            text_spans[k, 0] = table[text_tensors[k], CONTENTS_START]
            text_spans[k, 1] = table[text_tensors[k], CONTENTS_END]
    number_spans = np.zeros((len(number_tensors), 2), dtype=np.int64)
    for k in range(len(number_tensors)):
        if table[number_tensors[k], CONTENTS_START] >= 0:
            number_spans[k, 0] = table[number_tensors[k], CONTENTS_START]
            number_spans[k, 1] = table[number_tensors[k], CONTENTS_END]
    status, offsets, data = text_values(buf, text_spans, rows)
    if status != OK:
        return status, offsets, data, np.empty((0, rows), dtype=np.float64)
    status, numbers = number_values(buf, number_spans, number_fields, rows)
    return status, offsets, data, numbers


@compiled()
def text_values(buf, spans, rows):  # noqa: ANN001, ANN201
    """(status, ``[K·rows + 1]`` int64 offsets, uint8 bytes): the `bytes_contents` of K tensors' contents
    (``[K, 2]`` start/stop in `buf`), one after the other. FALLBACK unless each holds exactly `rows` values.
    Other fields of the contents are skipped, as protobuf's reader of `bytes_contents` does."""
    tensors = len(spans)
    offsets = np.zeros(tensors * rows + 1, dtype=np.int64)
    capacity = 0
    for k in range(tensors):
        capacity += spans[k, 1] - spans[k, 0]
    data = np.empty(capacity, dtype=np.uint8)
    value = 0
    size = 0
    for k in range(tensors):
        pos, end = spans[k, 0], spans[k, 1]
        first = value
        while pos < end:
            field, kind, start, stop, pos = _field(buf, pos, end)
            if pos < 0:
                return FALLBACK, offsets, data[:0]
            if field != CONTENTS_BYTES:
                continue
            if kind != LENGTH_DELIMITED or value - first >= rows:
                return FALLBACK, offsets, data[:0]
            for at in range(start, stop):  # a byte loop: a slice copy per value costs more than its bytes
                data[size] = buf[at]
                size += 1
            value += 1
            offsets[value] = size
        if value - first != rows:
            return FALLBACK, offsets, data[:0]
    return OK, offsets, data[:size]


@compiled(inline="always")
def _number(buf, pos, end, field, bits, doubles, bits32, floats):  # noqa: ANN001, ANN202
    """(float64 value, next position) of one element of contents field `field` at `pos`; next = -1 if
    malformed. `bits`/`doubles` and `bits32`/`floats`: one-element arrays viewing the same memory (a bit cast)."""
    if field == _DOUBLE:
        if pos + 8 > end:
            return 0.0, -1
        bits[0] = little_endian(buf, pos, 8)
        return doubles[0], pos + 8
    if field == _FLOAT:
        if pos + 4 > end:
            return 0.0, -1
        bits32[0] = np.uint32(little_endian(buf, pos, 4))
        return np.float64(floats[0]), pos + 4
    raw, pos = _varint(buf, pos, end)
    if field == _INT32:  # int32 is sign-extended to 64 bits on the wire; protobuf keeps the low 32
        return np.float64(np.int32(np.uint32(raw & uint64(0xFFFFFFFF)))), pos
    if field == _INT64:
        return np.float64(np.int64(raw)), pos
    if field == _UINT32:
        return np.float64(raw & uint64(0xFFFFFFFF)), pos
    return np.float64(raw), pos


@compiled()
def number_values(buf, spans, fields, rows):  # noqa: ANN001, ANN201
    """(status, ``[K, rows]`` float64) of K tensors' contents (``[K, 2]`` spans), tensor k's numbers read
    from contents field ``fields[k]`` (packed or not). FALLBACK unless each holds exactly `rows` numbers."""
    tensors = len(spans)
    values = np.empty((tensors, rows), dtype=np.float64)
    bits = np.empty(1, dtype=np.uint64)
    doubles = bits.view(np.float64)
    bits32 = np.empty(1, dtype=np.uint32)
    floats = bits32.view(np.float32)
    for k in range(tensors):
        pos, end, wanted = spans[k, 0], spans[k, 1], fields[k]
        fixed_type = FIXED64 if wanted == _DOUBLE else (FIXED32 if wanted == _FLOAT else VARINT)
        count = 0
        while pos < end:
            field, kind, start, stop, pos = _field(buf, pos, end)
            if pos < 0:
                return FALLBACK, values
            if field != wanted:
                continue
            if kind == LENGTH_DELIMITED:  # packed
                at = start
                while at < stop:
                    if count >= rows:
                        return FALLBACK, values
                    values[k, count], at = _number(buf, at, stop, wanted, bits, doubles, bits32, floats)
                    if at < 0:
                        return FALLBACK, values
                    count += 1
            elif kind == fixed_type:
                if count >= rows:
                    return FALLBACK, values
                values[k, count], _ = _number(buf, start, stop, wanted, bits, doubles, bits32, floats)
                count += 1
            else:
                return FALLBACK, values
        if count != rows:
            return FALLBACK, values
    return OK, values


def warm_up() -> None:
    """Compile (or load from numba's cache) every loop here for the argument types serving passes, so the
    first request does not wait for the compiler (seconds)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name="warm-up")
    request.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    request.inputs.add(name="number", datatype="FP64", shape=[1]).contents.fp64_contents.append(1.0)
    buffer = np.frombuffer(request.SerializeToString(), dtype=np.uint8)
    _, table = read_tensors(buffer)
    layout(buffer, table)
    tensors = [np.array([0], dtype=np.int64), np.array([1], dtype=np.int64), np.array([_DOUBLE], dtype=np.int64)]
    for array in tensors:  # read-only, as the request layouts pass them (numba compiles per writability)
        array.flags.writeable = False
    read_values(buffer, table, *tensors, 1)
