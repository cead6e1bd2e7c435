"""Request parsing: valid V1 and V2 bodies give the same columns; every malformed one is INVALID_ARGUMENT naming
the field at fault."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput

from services.common.errors import InvalidArgumentError
from services.predictor.features import RequestSchema, v1_columns, v2_columns

SCHEMA = RequestSchema(categorical=("C1", "C2"), numerical=("I1",), cohort_key="user_id", row_id_field="row_id",
                       max_rows=4)
ROWS = {"C1": ["a", "b"], "C2": [3, 4], "I1": [0.5, 7.0], "user_id": ["u1", "u2"]}
TYPES = {"C1": "BYTES", "C2": "INT64", "I1": "FP32", "user_id": "BYTES"}


def v2_inputs(**changes: Any) -> list[InferInput]:
    """Valid inputs, with `name=None` to drop one or `name=(datatype, shape, data)` to replace it."""
    spec = {n: (TYPES[n], [len(v)], v) for n, v in ROWS.items()}
    spec.update(changes)
    return [InferInput(name=n, datatype=d, shape=s, data=v) for n, (d, s, v) in ((n, x) for n, x in spec.items() if x)]


def test_v1_and_v2_give_the_same_columns() -> None:
    from_v2 = v2_columns(v2_inputs(), SCHEMA)
    from_v1 = v1_columns({"instances": [dict(zip(ROWS, values)) for values in zip(*ROWS.values())]}, SCHEMA)
    for columns in (from_v2, from_v1):
        assert columns.rows == 2 and columns.row_ids is None
        assert columns.text["C1"].to_pylist() == ["a", "b"] and columns.text["C2"].to_pylist() == ["3", "4"]
        assert columns.numbers["I1"].tolist() == [0.5, 7.0] and columns.cohort.to_pylist() == ["u1", "u2"]


def test_binary_inputs_nested_rows_nulls_and_row_ids() -> None:
    raw = InferInput(name="C1", datatype="BYTES", shape=[2, 1])
    raw._raw_data = b"".join(struct.pack("<I", len(s)) + s for s in (b"a", b"\xc3\xa9"))
    numbers = InferInput(name="I1", datatype="FP32", shape=[2])
    numbers._raw_data = np.array([1.0, 2.0], np.float32).tobytes()
    inputs = [raw, numbers, *v2_inputs(C1=None, I1=None, C2=("BYTES", [2, 1], [["x"], [None]])),
              InferInput(name="row_id", datatype="BYTES", shape=[2], data=["r1", "r2"])]
    columns = v2_columns(inputs, SCHEMA)
    assert columns.text["C1"].to_pylist() == ["a", "é"] and columns.text["C2"].to_pylist() == ["x", None]
    assert columns.numbers["I1"].tolist() == [1.0, 2.0] and columns.row_ids.to_pylist() == ["r1", "r2"]


V2_CASES = {
    "missing field": (dict(C2=None), "C2"),
    "missing cohort key": (dict(user_id=None), "user_id"),
    "unknown field": (dict(C9=("BYTES", [2], ["a", "b"])), "C9"),
    "text in a number field": (dict(I1=("BYTES", [2], ["a", "b"])), "I1"),
    "float in a text field": (dict(C1=("FP32", [2], [1.5, 2.5])), "C1"),
    "datatype says BYTES, data are numbers": (dict(C1=("BYTES", [2], [1, 2])), "C1"),
    "datatype says INT64, data are text": (dict(C2=("INT64", [2], ["a", "b"])), "C2"),
    "unsupported datatype": (dict(C1=("BOOL", [2], [True, False])), "C1"),
    "shape [B, 2]": (dict(C1=("BYTES", [1, 2], ["a", "b"])), "C1"),
    "three dimensions": (dict(C1=("BYTES", [2, 1, 1], ["a", "b"])), "C1"),
    "negative shape": (dict(C1=("BYTES", [-2], ["a", "b"])), "C1"),
    "shape and data disagree": (dict(C1=("BYTES", [3], ["a", "b"])), "C1"),
    "rows disagree between inputs": (dict(C2=("INT64", [1], [3])), "C2"),
    "NaN": (dict(I1=("FP64", [2], [float("nan"), 1.0])), "I1"),
    "infinity": (dict(I1=("FP64", [2], [float("inf"), 1.0])), "I1"),
    "null number": (dict(I1=("FP32", [2], [None, 1.0])), "I1"),
    "null cohort key": (dict(user_id=("BYTES", [2], ["u1", None])), "user_id"),
    "mixed types": (dict(C1=("BYTES", [2], ["a", 1])), "C1"),
    "ragged nesting": (dict(C1=("BYTES", [2, 1], [["a"], ["b", "c"]])), "C1"),
    # found by the REST fuzz test (text all BYTES, so the request takes the bulk path first)
    "a list among the numbers": (dict(C2=("BYTES", [2], ["3", "4"]), I1=("FP64", [2], [1.0, [2.0, 3.0]])), "I1"),
}


@pytest.mark.parametrize("case", sorted(V2_CASES))
def test_malformed_v2_inputs_name_the_field(case: str) -> None:
    changes, field = V2_CASES[case]
    with pytest.raises(InvalidArgumentError) as caught:
        v2_columns(v2_inputs(**changes), SCHEMA)
    assert caught.value.field == field, caught.value


@pytest.mark.parametrize(("inputs", "field"), [
    ([], "inputs"),
    ("empty", "inputs"),
    ("oversized", "C1"),
    ("bad utf-8", "C1"),
    ("bad bytes framing", "C1"),
    ("raw size", "I1"),
    ("twice", "C1"),
])
def test_batch_and_encoding_problems(inputs: Any, field: str) -> None:
    if inputs == "empty":
        inputs = v2_inputs(**{n: (TYPES[n], [0], []) for n in ROWS})
    elif inputs == "oversized":
        inputs = v2_inputs(**{n: (TYPES[n], [5], (v * 3)[:5]) for n, v in ROWS.items()})
    elif inputs == "bad utf-8":
        inputs = v2_inputs(C1=("BYTES", [2], [b"\xff", b"a"]))
    elif inputs in ("bad bytes framing", "raw size"):
        name = "C1" if inputs == "bad bytes framing" else "I1"
        raw = InferInput(name=name, datatype=TYPES[name], shape=[2])
        raw._raw_data = b"\x09\x00\x00\x00ab" if name == "C1" else b"\x00" * 7
        inputs = [raw, *v2_inputs(**{name: None})]
    elif inputs == "twice":
        inputs = [*v2_inputs(), InferInput(name="C1", datatype="BYTES", shape=[2], data=["a", "b"])]
    with pytest.raises(InvalidArgumentError) as caught:
        v2_columns(inputs, SCHEMA)
    assert caught.value.field == field, caught.value


V1_CASES = [
    ([1, 2], "body"),
    ({"instances": []}, "instances"),
    ({"instances": {"C1": "a"}}, "instances"),
    ({"instances": [1, 2]}, "instances"),
    ({"instances": [{"C1": "a"}] * 5}, "instances"),
    ({"inputs": []}, "inputs"),
    ({"instances": [{"C1": "a", "C2": 1, "I1": 0.5}]}, "user_id"),
    ({"instances": [{"C1": "a", "C2": 1, "I1": 0.5, "user_id": "u", "extra": 1}]}, "extra"),
    ({"instances": [{"C1": "a", "C2": 1, "I1": "x", "user_id": "u"}]}, "I1"),
    ({"instances": [{"C1": "a", "C2": 1, "I1": 1, "user_id": "u"}, {"C1": 2, "C2": 1, "I1": 1, "user_id": "u"}]}, "C1"),
    ({"instances": [{"C1": ["a"], "C2": 1, "I1": 1, "user_id": "u"}]}, "C1"),
    ({"instances": [{"C1": "a", "C2": 1, "I1": True, "user_id": "u"}]}, "I1"),
    ({"instances": [{"C1": "a", "C2": 1, "I1": 1, "user_id": "u"}], "id": 7}, "id"),
]


@pytest.mark.parametrize(("body", "field"), V1_CASES)
def test_malformed_v1_bodies_name_the_field(body: Any, field: str) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        if isinstance(body, dict) and "id" in body:
            from services.predictor.features import check_request_id

            check_request_id(body["id"])
        v1_columns(body, SCHEMA)
    assert caught.value.field == field, caught.value


GRPC_TEXT = {"C1": ["a", "é"], "C2": ["3", "4"], "user_id": ["u1", "u2"]}


def grpc_message(**changes: Any) -> Any:
    """A V2 gRPC request of typed contents (`name=None` drops an input, `name=(datatype, shape, values)` replaces it)."""
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    spec: dict[str, Any] = {n: ("BYTES", [len(v)], v) for n, v in GRPC_TEXT.items()}
    spec["I1"] = ("FP64", [2], [0.5, 7.0])
    spec.update(changes)
    message = pb.ModelInferRequest(model_name="ctr")
    fields = {"BYTES": "bytes_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "INT64": "int64_contents",
              "INT32": "int_contents"}
    for name, value in spec.items():
        if value is None:
            continue
        datatype, shape, values = value
        tensor = message.inputs.add(name=name.removesuffix("_again"), datatype=datatype, shape=shape)
        getattr(tensor.contents, fields[datatype]).extend(v.encode() if isinstance(v, str) else v for v in values)
    return message


@pytest.mark.parametrize("changes", [{}, {"row_id": ("BYTES", [2], ["r1", "r2"])}, {"I1": ("FP32", [2], [0.5, 7.0])},
                                     {"I1": ("INT64", [2], [1, 9])}, {"I1": ("INT32", [2], [1, 9])}])
def test_grpc_contents_read_from_the_message_equal_the_per_input_path(changes: dict[str, Any]) -> None:
    from kserve.protocol.infer_type import InferRequest

    from services.predictor.features import grpc_columns, wire_columns

    message = grpc_message(**changes)
    direct = grpc_columns(message, SCHEMA)
    reference = v2_columns(InferRequest.from_grpc(message).inputs, SCHEMA, typed_contents=True)
    from_wire = wire_columns(message.SerializeToString(), SCHEMA)
    assert direct is not None and from_wire is not None
    assert from_wire.categorical.to_pylist() == direct.categorical.to_pylist()
    assert from_wire.numerical.tolist() == direct.numerical.tolist()
    assert direct.rows == reference.rows == 2
    assert direct.categorical.to_pylist() == reference.categorical.to_pylist() == ["a", "é", "3", "4"]
    assert direct.numerical.tolist() == reference.numerical.tolist()
    assert direct.cohort.to_pylist() == reference.cohort.to_pylist()
    assert (direct.row_ids is None) == (reference.row_ids is None)
    if direct.row_ids is not None:
        assert direct.row_ids.to_pylist() == reference.row_ids.to_pylist() == ["r1", "r2"]


@pytest.mark.parametrize("changes", [
    {"C2": ("INT64", [2], [3, 4])},  # integers for a text field: the per-input path converts them
    {"C1": None},  # a missing field
    {"user_id": None},
    {"I1": ("BYTES", [2], ["1", "2"])},
    {"C1_again": ("BYTES", [2], ["x", "y"])},  # an input given twice
    {"C1": ("BYTES", [2, 1], ["a", "b"])},
    {"C1": ("BYTES", [3], ["a", "b", "c"])},
    {"C1": ("BYTES", [2], ["a"])},  # the shape says 2, the contents hold 1
    {"I1": ("FP64", [2], [0.5, float("inf")])},
    {"row_id": ("INT64", [2], [1, 2])},
    {"row_id": ("BYTES", [2], [])},  # row ids that the shape promises and the contents lack
    {"other": ("BYTES", [2], ["a", "b"])},
    {n: ("BYTES", [0], []) for n in GRPC_TEXT} | {"I1": ("FP64", [0], [])},
    {n: ("BYTES", [5], ["v"] * 5) for n in GRPC_TEXT} | {"I1": ("FP64", [5], [1.0] * 5)},  # more than max_rows
])
def test_grpc_messages_the_direct_path_does_not_take_go_to_the_per_input_path(changes: dict[str, Any]) -> None:
    from services.predictor.features import grpc_columns, wire_columns

    message = grpc_message(**changes)
    assert grpc_columns(message, SCHEMA) is None
    assert wire_columns(message.SerializeToString(), SCHEMA) is None
