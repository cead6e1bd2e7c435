"""The wire reader (`features.wire_columns`) gives exactly what protobuf's parse gives (`features.grpc_columns`):
on generated requests, on encodings protobuf's own serializer never writes (unpacked numbers, fields out of order,
unknown fields), and on corrupted bytes, where it must never raise."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from services.predictor.features import (
    RequestColumns,
    RequestSchema,
    grpc_columns,
    wire_columns,
)

SCHEMA = RequestSchema(categorical=("C1", "C2"), numerical=("I1", "I2"), cohort_key="user_id", row_id_field="row_id",
                       max_rows=4, missing_numerical=frozenset({"I2"}))
CONTENTS = {"BYTES": "bytes_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "INT32": "int_contents",
            "INT8": "int_contents", "INT64": "int64_contents", "UINT32": "uint_contents", "UINT64": "uint64_contents",
            "BOOL": "bool_contents"}
VALUES = {
    "bytes_contents": st.one_of(st.text(max_size=20).map(str.encode), st.binary(max_size=20)),
    "fp32_contents": st.floats(width=32),
    "fp64_contents": st.floats(),
    "int_contents": st.integers(-2**31, 2**31 - 1),
    "int64_contents": st.integers(-2**63, 2**63 - 1),
    "uint_contents": st.integers(0, 2**32 - 1),
    "uint64_contents": st.integers(0, 2**64 - 1),
    "bool_contents": st.booleans(),
}


def same_columns(first: RequestColumns, second: RequestColumns) -> bool:
    return (first.rows == second.rows and first.categorical.to_pylist() == second.categorical.to_pylist()
            and np.array_equal(first.numerical, second.numerical, equal_nan=True)
            and first.cohort.to_pylist() == second.cohort.to_pylist()
            and (first.row_ids is None) == (second.row_ids is None)
            and (first.row_ids is None or first.row_ids.to_pylist() == second.row_ids.to_pylist()))


@st.composite
def tensors(draw: Any, rows: int) -> tuple[str, str, list[int], str, list[Any]]:
    """One input: mostly a well-formed one of the schema, sometimes a wrong name, datatype, shape or count."""
    name = draw(st.sampled_from(["C1", "C2", "I1", "I2", "user_id", "row_id", "other"]))
    text = name not in ("I1", "I2")
    datatype = draw(st.sampled_from(["BYTES"] * 6 + list(CONTENTS)) if text
                    else st.sampled_from(["FP64", "FP32", "INT32", "INT64", "UINT32", "UINT64", "INT8", "BYTES"]))
    shape = draw(st.sampled_from([[rows]] * 8 + [[rows, 1], [rows + 1], [], [rows, 2]]))
    field = draw(st.sampled_from([CONTENTS[datatype]] * 8 + list(VALUES)))
    count = draw(st.sampled_from([rows] * 8 + [rows - 1, rows + 1]))
    return name, datatype, shape, field, draw(st.lists(VALUES[field], min_size=max(count, 0), max_size=max(count, 0)))


@st.composite
def requests(draw: Any) -> pb.ModelInferRequest:
    rows = draw(st.integers(1, 5))
    message = pb.ModelInferRequest(model_name="ctr", id=draw(st.sampled_from(["", "r-1"])))
    names = ["C1", "C2", "I1", "I2", "user_id"] + draw(st.sampled_from([[], ["row_id"]]))
    common = [(n, "BYTES" if n not in ("I1", "I2") else "FP64", [rows], CONTENTS["BYTES" if n not in ("I1", "I2")
                                                                                   else "FP64"]) for n in names]
    spec = []
    for name, datatype, shape, field in draw(st.permutations(common)):
        values = draw(st.lists(VALUES[field], min_size=rows, max_size=rows)) if field != "bytes_contents" else draw(
            st.lists(st.text(max_size=20).map(str.encode), min_size=rows, max_size=rows))
        spec.append((name, datatype, shape, field, values))
    if draw(st.booleans()):  # one input changed, added or dropped
        changed = draw(tensors(rows))
        action = draw(st.sampled_from(["replace", "add", "drop"]))
        spec = ([t for t in spec if t[0] != changed[0]] + ([changed] if action != "drop" else [])
                if action != "add" else spec + [changed])
    for name, datatype, shape, field, values in spec:
        tensor = message.inputs.add(name=name, datatype=datatype, shape=shape)
        getattr(tensor.contents, field).extend(values)
    if draw(st.integers(0, 9)) == 0:
        message.raw_input_contents.append(b"\x00" * 8)
    return message


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(message=requests())
def test_the_wire_reader_takes_every_request_the_message_reader_takes_and_reads_it_alike(
        message: pb.ModelInferRequest) -> None:
    from_wire = wire_columns(message.SerializeToString(), SCHEMA)
    from_message = grpc_columns(message, SCHEMA)
    assert (from_wire is None) == (from_message is None)
    if from_wire is not None:
        assert same_columns(from_wire, from_message)


def key(number: int, wire_type: int) -> bytes:
    return varint(number << 3 | wire_type)


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def delimited(number: int, payload: bytes) -> bytes:
    return key(number, 2) + varint(len(payload)) + payload


def test_unpacked_numbers_fields_out_of_order_and_unknown_fields_read_as_protobuf_reads_them() -> None:
    def text_tensor(name: str, values: list[bytes]) -> bytes:
        contents = b"".join(delimited(8, v) for v in values) + key(15, 0) + varint(7)  # an unknown field
        # contents first, then the shape unpacked, the datatype and the name: any order is valid
        return delimited(5, contents) + key(3, 0) + varint(len(values)) + delimited(2, b"BYTES") + delimited(1, name.encode())

    doubles = key(7, 1) + struct.pack("<d", 0.25) + key(7, 1) + struct.pack("<d", -3.0)  # unpacked FP64
    ints = key(2, 0) + varint(-5) + delimited(2, varint(9))  # INT32: one unpacked, one packed
    raw = b"".join([
        delimited(1, b"ctr"),
        delimited(5, text_tensor("C1", [b"a", "é".encode()])),
        delimited(5, text_tensor("C2", [b"x" * 40, b""])),
        delimited(5, text_tensor("user_id", [b"u1", b"u2"])),
        key(99, 5) + b"\x00\x00\x00\x00",  # an unknown fixed32 field of the request
        delimited(5, delimited(1, b"I1") + delimited(2, b"FP64") + delimited(3, varint(2)) + delimited(5, doubles)),
        delimited(5, delimited(1, b"I2") + delimited(2, b"INT32") + delimited(3, varint(2)) + delimited(5, ints)),
    ])
    from_wire = wire_columns(raw, SCHEMA)
    from_message = grpc_columns(pb.ModelInferRequest.FromString(raw), SCHEMA)
    assert from_wire is not None and from_message is not None and same_columns(from_wire, from_message)
    assert from_wire.categorical.to_pylist() == ["a", "é", "x" * 40, ""]
    assert from_wire.numerical.tolist() == [[0.25, -3.0], [-5.0, 9.0]]


def common_request(rows: int = 3) -> pb.ModelInferRequest:
    message = pb.ModelInferRequest(model_name="ctr", id="r-1")
    for name in ("C1", "C2", "user_id", "row_id"):
        message.inputs.add(name=name, datatype="BYTES", shape=[rows]).contents.bytes_contents.extend(
            f"{name}-{r}-é".encode() for r in range(rows))
    for name in ("I1", "I2"):
        message.inputs.add(name=name, datatype="FP32", shape=[rows]).contents.fp32_contents.extend(
            [0.5 * r for r in range(rows)])
    return message


@settings(max_examples=1500, deadline=None, database=None)
@given(cuts=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255), st.sampled_from(["set", "drop", "insert"])),
                     min_size=1, max_size=4))
def test_corrupted_bytes_never_raise_and_what_is_read_is_what_protobuf_reads(cuts: list[tuple[int, int, str]]) -> None:
    raw = bytearray(common_request().SerializeToString())
    for at, byte, action in cuts:
        at %= len(raw) + 1
        if action == "set" and at < len(raw):
            raw[at] = byte
        elif action == "drop":
            del raw[at:at + 1 + byte % 8]
        else:
            raw[at:at] = bytes([byte])
    from_wire = wire_columns(bytes(raw), SCHEMA)  # must not raise, whatever the bytes
    try:
        message = pb.ModelInferRequest.FromString(bytes(raw))
    except DecodeError:
        return  # the server refuses it before reading the tensors (INVALID_ARGUMENT)
    from_message = grpc_columns(message, SCHEMA)
    if from_wire is not None:
        assert from_message is not None and same_columns(from_wire, from_message)


def test_a_large_request_reads_alike_and_its_text_is_one_utf8_block() -> None:
    rng = np.random.default_rng(0)
    message = pb.ModelInferRequest(model_name="ctr")
    rows = 4
    schema = RequestSchema(categorical=tuple(f"C{i}" for i in range(26)), numerical=("I1",), cohort_key="user_id",
                           row_id_field="row_id", max_rows=rows)
    for name in (*schema.categorical, "user_id"):
        message.inputs.add(name=name, datatype="BYTES", shape=[rows]).contents.bytes_contents.extend(
            f"{name}-{v}".encode() for v in rng.integers(0, 10**6, rows))
    message.inputs.add(name="I1", datatype="FP64", shape=[rows]).contents.fp64_contents.extend(rng.random(rows).tolist())
    from_wire = wire_columns(message.SerializeToString(), schema)
    assert from_wire is not None and same_columns(from_wire, grpc_columns(message, schema))
    assert from_wire.categorical.type == pa.large_string() and len(from_wire.categorical) == 26 * rows


def test_invalid_utf8_text_is_left_to_the_message_reader() -> None:
    message = common_request()
    message.inputs[0].contents.bytes_contents[0] = b"\xff\xfe"
    assert wire_columns(message.SerializeToString(), SCHEMA) is None
    assert grpc_columns(message, SCHEMA) is None  # the per-input path then names C1


def test_without_a_writable_cache_folder_the_loops_compile_in_memory(tmp_path: Path) -> None:
    """A read-only root file system (the chart's pods): numba finds no cache folder and refuses `cache=True`
    at import; the reader and the lookup must still import and work."""
    script = """
import numba.core.caching as caching
caching.CacheImpl._locator_classes = []  # no cache folder anywhere, as on a read-only file system
import pyarrow as pa
from crossadapt.data.vocabulary import Vocabulary
from services.predictor import lookup, wire
wire.warm_up()
index = lookup.VocabularyIndex(Vocabulary({"f": pa.array(["a", "b"])}), ["f"])
print(index.lookup([pa.array(["b", "z"])]).ravel().tolist())
"""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[2, 0]"
