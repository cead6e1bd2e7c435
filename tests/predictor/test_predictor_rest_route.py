"""The V2 JSON route: the common request read directly (`features.json_columns`) gives exactly what KServe's path
gives, every other body goes to KServe's handler, and the answers of both are the same JSON."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kserve.protocol.infer_type import InferRequest
from kserve.protocol.rest.v2_datamodels import InferenceRequest
from predictor_world import random_rows, v2_json

from services.common.errors import InvalidArgumentError
from services.predictor.features import RequestSchema, json_columns, v2_columns

SCHEMA = RequestSchema(categorical=("C1", "C2"), numerical=("I1", "I2"), cohort_key="user_id", row_id_field="row_id",
                       max_rows=4, missing_numerical=frozenset({"I2"}))
TEXT = st.one_of(st.text(max_size=8), st.none(), st.integers(-5, 5), st.floats(allow_nan=False), st.booleans())
NUMBER = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**40, 2**40), st.none(),
                   st.booleans(), st.text(max_size=3))


def kserve_columns(payload: Any) -> Any:
    """What KServe's path makes of the body: its validation, its InferRequest, then `v2_columns` (or the error)."""
    try:
        request = InferRequest.from_inference_request(InferenceRequest.model_validate(payload), "ctr")
        return v2_columns(request.inputs, SCHEMA)
    except (InvalidArgumentError, ValueError) as exc:
        return exc


@st.composite
def bodies(draw: Any) -> dict[str, Any]:
    """The common request (numbers of a number datatype, text as BYTES, shape [B]), half the time changed in one
    place: another datatype, a value of another kind, another shape, a missing input, parameters or outputs."""
    rows = draw(st.integers(1, 5))
    names = draw(st.permutations(["C1", "C2", "I1", "I2", "user_id"] + draw(st.sampled_from([[], ["row_id"]]))))
    inputs = []
    for name in names:
        if name in ("I1", "I2"):
            data = draw(st.lists(st.one_of(st.floats(allow_nan=False, allow_infinity=False, width=32),
                                           st.integers(-2**40, 2**40)), min_size=rows, max_size=rows))
            datatype = draw(st.sampled_from(["FP64", "FP32"]))
        else:
            data, datatype = draw(st.lists(st.text(max_size=8), min_size=rows, max_size=rows)), "BYTES"
        inputs.append({"name": name, "shape": [rows], "datatype": datatype, "data": data})
    body: dict[str, Any] = {"inputs": inputs} | draw(st.sampled_from([{}, {"id": "r-1"}]))
    change = draw(st.sampled_from(["none"] * 5 + ["datatype", "value", "shape", "drop", "extra"]))
    target = inputs[draw(st.integers(0, len(inputs) - 1))]
    if change == "datatype":
        target["datatype"] = draw(st.sampled_from(["INT64", "FP32", "BYTES", "BOOL"]))
    elif change == "value":
        numeric = target["name"] in ("I1", "I2")
        target["data"][draw(st.integers(0, rows - 1))] = draw(NUMBER if numeric else TEXT)
    elif change == "shape":
        target["shape"] = draw(st.sampled_from([[rows, 1], [rows + 1], [], [rows, 2]]))
    elif change == "drop":
        inputs.remove(target)
    elif change == "extra":
        body |= draw(st.sampled_from([{"parameters": {}}, {"outputs": [{"name": "arm"}]}]))
    return body


@settings(max_examples=400, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies())
def test_the_direct_reader_reads_what_kserves_path_reads(body: dict[str, Any]) -> None:
    direct = json_columns(body, SCHEMA)
    reference = kserve_columns(body)
    if direct is None:
        return  # KServe's path reads it, or refuses it naming the field (tests/predictor/test_predictor_features.py)
    assert not isinstance(reference, Exception), reference
    assert direct.rows == reference.rows and direct.categorical.to_pylist() == reference.categorical.to_pylist()
    assert np.array_equal(direct.numerical, reference.numerical, equal_nan=True)
    assert direct.cohort.to_pylist() == reference.cohort.to_pylist()
    assert (direct.row_ids is None) == (reference.row_ids is None)


def test_the_common_request_is_read_directly_and_the_rest_is_left_to_kserve() -> None:
    common = {"inputs": [{"name": n, "shape": [2], "datatype": "FP64" if n in ("I1", "I2") else "BYTES",
                          "data": [1.5, 2.0] if n in ("I1", "I2") else ["a", "b"]} for n in ("C1", "C2", "I1", "I2",
                                                                                             "user_id")]}
    assert json_columns(common, SCHEMA) is not None
    assert json_columns(common | {"id": "r-1"}, SCHEMA) is not None
    for other in ({"parameters": {}}, {"outputs": [{"name": "arm"}]}):
        assert json_columns(common | other, SCHEMA) is None
    nested = {"inputs": [dict(i, shape=[2, 1], data=[[v] for v in i["data"]]) for i in common["inputs"]]}
    assert json_columns(nested, SCHEMA) is None and not isinstance(kserve_columns(nested), Exception)
    for body in (None, [], {"inputs": "x"}, {"inputs": [{"name": "C1"}]},
                 {"inputs": [dict(i, datatype=["BYTES"]) for i in common["inputs"]]}):
        assert json_columns(body, SCHEMA) is None


def test_both_paths_answer_the_same_json_and_errors_name_the_field(predictor: Any) -> None:
    rows = random_rows(np.random.default_rng(11), 3)
    url = f"{predictor.http}/v2/models/ctr/infer"
    direct = httpx.post(url, json=v2_json(rows, request_id="route-direct"), timeout=30)
    # Request parameters are KServe's to read: the same rows take KServe's path.
    through_kserve = httpx.post(url, json=v2_json(rows, request_id="route-kserve") | {"parameters": {}}, timeout=30)
    assert direct.status_code == through_kserve.status_code == 200
    first, second = direct.json(), through_kserve.json()
    assert first.pop("id") == "route-direct" and second.pop("id") == "route-kserve"
    assert first == second
    assert set(first) == {"model_name", "model_version", "outputs", "parameters"}
    for body, field in ((b"{not json", "body"), (b'{"inputs": 3}', "inputs")):
        refused = httpx.post(url, content=body, headers={"content-type": "application/json"}, timeout=30)
        assert refused.status_code == 400 and refused.json()["field"] == field, refused.text
    unknown_model = httpx.post(f"{predictor.http}/v2/models/other/infer", json=v2_json(rows), timeout=30)
    assert unknown_model.status_code == 400 and unknown_model.json()["field"] == "model_name"


@pytest.mark.parametrize("rows", [1, 7])
def test_an_unknown_field_on_the_direct_path_is_still_refused_by_name(predictor: Any, rows: int) -> None:
    body = v2_json(random_rows(np.random.default_rng(rows), rows))
    body["inputs"].append({"name": "C9", "shape": [rows], "datatype": "BYTES", "data": ["x"] * rows})
    refused = httpx.post(f"{predictor.http}/v2/models/ctr/infer", json=body, timeout=30)
    assert refused.status_code == 400 and refused.json()["field"] == "C9"
