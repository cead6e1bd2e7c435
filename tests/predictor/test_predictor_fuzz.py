"""Fuzz: ≥ 10,000 generated malformed requests over REST (V1, V2, feedback) and gRPC (V2, admin), sent
concurrently. No answer is a server error (5xx, INTERNAL, UNKNOWN), the process never dies, and a valid request
is still answered at the end. Each hypothesis example is a batch of requests, so generation and sending overlap
and the whole run stays well under a minute."""

from __future__ import annotations

import math
import struct
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import httpx
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from predictor_world import MODEL, PredictorProcess, random_rows, v2_grpc, v2_json

REST_EXAMPLES, GRPC_EXAMPLES, BATCH = 50, 50, 100
SERVER_ERRORS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE,
                 grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.DATA_LOSS}
FIELDS = ["C1", "C2", "C3", "I1", "I2", "user_id", "row_id"]
VALID = random_rows(np.random.default_rng(0), 64)
DATATYPES = ["BYTES", "FP32", "FP64", "INT64", "INT8", "UINT8", "BOOL", "FP16", "STRING", ""]

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                                 st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                           max_leaves=12)


def base_inputs(rows: int) -> list[dict[str, Any]]:
    return v2_json({k: v[:rows] for k, v in VALID.items()})["inputs"]


@st.composite
def v2_body(draw: st.DrawFn) -> Any:
    """A V2 body with one or two defects."""
    rows = draw(st.integers(1, 4))
    inputs = base_inputs(rows)
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["drop", "unknown", "datatype", "shape", "data", "oversize", "empty", "nan",
                                     "not-a-list", "id", "outputs", "whole"]))
        target = draw(st.integers(0, len(inputs) - 1)) if inputs else 0
        if kind == "drop" and inputs:
            inputs.pop(target)
        elif kind == "unknown":
            inputs.append({"name": draw(st.text(max_size=6)), "shape": [rows], "datatype": "BYTES",
                           "data": ["x"] * rows})
        elif kind == "datatype" and inputs:
            inputs[target]["datatype"] = draw(st.sampled_from(DATATYPES))
        elif kind == "shape" and inputs:
            inputs[target]["shape"] = draw(st.one_of(st.lists(st.integers(-3, 10**12), max_size=3),
                                                     json_values))
        elif kind == "data" and inputs:
            inputs[target]["data"] = draw(st.one_of(st.lists(json_values, max_size=5), json_values))
        elif kind == "oversize":
            inputs = v2_json({k: (v * 2)[:65] for k, v in VALID.items()})["inputs"]
        elif kind == "empty":
            inputs = [dict(i, shape=[0], data=[]) for i in inputs]
        elif kind == "nan" and inputs:  # JSON has no NaN: the body is not JSON
            return {"raw": v2_json(VALID)["inputs"].__repr__().replace("0.", "NaN", 1)}
        elif kind == "not-a-list":
            return {"inputs": draw(json_values)}
        elif kind == "id":
            return {"inputs": inputs, "id": draw(st.one_of(st.integers(), st.lists(st.integers()), st.text(min_size=300)))}
        elif kind == "outputs":
            return {"inputs": inputs, "outputs": [{"name": draw(st.text(max_size=5))}]}
        elif kind == "whole":
            return draw(json_values)
    return {"inputs": inputs}


@st.composite
def v1_body(draw: st.DrawFn) -> Any:
    rows = draw(st.integers(1, 3))
    instances = [{k: v[i] for k, v in VALID.items()} for i in range(rows)]
    kind = draw(st.sampled_from(["drop", "extra", "value", "not-object", "empty", "oversize", "whole", "key"]))
    row = draw(st.integers(0, rows - 1))
    if kind == "drop":
        for instance in instances:
            instance.pop(draw(st.sampled_from(FIELDS[:6])), None)
    elif kind == "extra":
        instances[row][draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in FIELDS))] = 1
    elif kind == "value":
        instances[row][draw(st.sampled_from(FIELDS[:6]))] = draw(st.one_of(st.lists(json_scalars, max_size=2),
                                                                          st.booleans(), st.dictionaries(st.text(max_size=3), json_scalars, max_size=2)))
    elif kind == "not-object":
        instances[row] = draw(json_scalars)
    elif kind == "empty":
        instances = []
    elif kind == "oversize":
        instances = instances * 65
    elif kind == "whole":
        return draw(json_values)
    elif kind == "key":
        return {"instances": instances, draw(st.text(min_size=1, max_size=6).filter(lambda k: k not in ("instances", "id"))): 1}
    return {"instances": instances}


@st.composite
def rest_request(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    """(path, httpx keyword arguments) of a malformed REST call."""
    kind = draw(st.sampled_from(["v2", "v2", "v1", "v1", "bytes", "model", "feedback"]))
    if kind == "v2":
        body = draw(v2_body())
        if isinstance(body, dict) and "raw" in body:
            return f"/v2/models/{MODEL}/infer", {"content": body["raw"].encode(), "headers": {"content-type": "application/json"}}
        return f"/v2/models/{MODEL}/infer", {"json": body}
    if kind == "v1":
        return f"/v1/models/{MODEL}:predict", {"json": draw(v1_body())}
    if kind == "bytes":
        path = draw(st.sampled_from([f"/v2/models/{MODEL}/infer", f"/v1/models/{MODEL}:predict",
                                     f"/v2/models/{MODEL}/feedback"]))
        headers = {"content-type": draw(st.sampled_from(["application/json", "application/octet-stream", "text/plain"]))}
        if draw(st.booleans()):
            headers["inference-header-content-length"] = str(draw(st.integers(-5, 200)))
        return path, {"content": draw(st.binary(max_size=120)), "headers": headers}
    if kind == "model":
        name = draw(st.text(alphabet="abcxyz-_.", min_size=1, max_size=8).filter(lambda n: n != MODEL))
        return f"/v2/models/{name}/infer", {"json": v2_json({k: v[:2] for k, v in VALID.items()})}
    return f"/v2/models/{MODEL}/feedback", {"json": draw(st.one_of(json_values, st.fixed_dictionaries(
        {"row_ids": st.lists(json_scalars, max_size=3), "labels": st.lists(json_scalars, max_size=3)})))}


@st.composite
def grpc_request(draw: st.DrawFn) -> tuple[str, bytes]:
    """(method, serialized request) of a malformed gRPC call."""
    kind = draw(st.sampled_from(["infer", "infer", "infer", "raw", "garbage", "admin"]))
    if kind == "garbage":
        return "/inference.GRPCInferenceService/ModelInfer", draw(st.binary(min_size=1, max_size=80))
    if kind == "admin":
        method = draw(st.sampled_from(["SetSplit", "SwapArm", "SubmitFeedback", "GetArmMetrics"]))
        return f"/crossadapt.v1.PredictorAdminService/{method}", draw(st.binary(min_size=1, max_size=40)) + b"\xff"
    rows = draw(st.integers(1, 4))
    request = v2_grpc({k: v[:rows] for k, v in VALID.items()}, raw=kind == "raw")
    for _ in range(draw(st.integers(1, 2))):
        mutation = draw(st.sampled_from(["drop", "datatype", "shape", "contents", "nan", "model", "raw-bytes",
                                         "unknown", "raw-count"]))
        index = draw(st.integers(0, max(len(request.inputs) - 1, 0)))
        if not len(request.inputs):
            break
        tensor = request.inputs[index]
        if mutation == "drop":
            del request.inputs[index]
            if request.raw_input_contents:
                del request.raw_input_contents[index]
        elif mutation == "datatype":
            tensor.datatype = draw(st.sampled_from(DATATYPES))
        elif mutation == "shape":
            del tensor.shape[:]
            tensor.shape.extend(draw(st.lists(st.integers(-(2**40), 2**40), max_size=3)))
        elif mutation == "contents" and not request.raw_input_contents:
            tensor.contents.Clear()
            tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=5)))
        elif mutation == "nan":
            tensor.datatype = "FP64"
            tensor.contents.Clear()
            tensor.contents.fp64_contents.extend([math.nan] * rows)
            if request.raw_input_contents:
                request.raw_input_contents[index] = struct.pack(f"<{rows}d", *([math.nan] * rows))
        elif mutation == "model":
            request.model_name = draw(st.text(max_size=6))
        elif mutation == "raw-bytes" and request.raw_input_contents:
            request.raw_input_contents[index] = draw(st.binary(max_size=40))
        elif mutation == "unknown":
            extra = request.inputs.add(name=draw(st.text(max_size=5)), datatype="BYTES", shape=[rows])
            extra.contents.bytes_contents.extend([b"x"] * rows)
            if request.raw_input_contents:
                request.raw_input_contents.append(struct.pack("<I", 1) + b"x" * 1)
        elif mutation == "raw-count" and request.raw_input_contents:
            request.raw_input_contents.append(b"\x00")
    return "/inference.GRPCInferenceService/ModelInfer", request.SerializeToString()


def fuzz_settings(examples: int) -> settings:
    # No shrinking: a batch of 100 requests shrinks for minutes; the assertion names the failing request.
    return settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck),
                    derandomize=True, phases=(Phase.generate,))


def test_malformed_rest_requests_never_get_a_server_error(predictor: PredictorProcess) -> None:
    statuses: dict[int, int] = {}
    with httpx.Client(base_url=predictor.http, timeout=30) as http, ThreadPoolExecutor(8) as pool:

        def send(call: tuple[str, dict[str, Any]]) -> tuple[int, str]:
            path, kwargs = call
            reply = http.post(path, **kwargs)
            return reply.status_code, reply.text[:300]

        @fuzz_settings(REST_EXAMPLES)
        @given(calls=st.lists(rest_request(), min_size=BATCH, max_size=BATCH))
        def fuzz(calls: list[tuple[str, dict[str, Any]]]) -> None:
            for (status, text), call in zip(pool.map(send, calls), calls):
                statuses[status] = statuses.get(status, 0) + 1
                assert status < 500, (status, text, call)

        fuzz()
    assert sum(statuses.values()) >= REST_EXAMPLES * BATCH
    assert statuses.get(400, 0) >= 0.9 * sum(statuses.values()), statuses
    answer_a_valid_request(predictor)


def test_malformed_grpc_requests_never_get_a_server_error(predictor: PredictorProcess) -> None:
    channels = {port: grpc.insecure_channel(f"127.0.0.1:{port}") for port in (predictor.grpc_port, predictor.admin_port)}
    codes: dict[grpc.StatusCode, int] = {}

    def callable_for(method: str):  # noqa: ANN202
        channel = channels[predictor.admin_port if "Admin" in method else predictor.grpc_port]
        return channel.unary_unary(method, request_serializer=None, response_deserializer=None)

    @fuzz_settings(GRPC_EXAMPLES)
    @given(calls=st.lists(grpc_request(), min_size=BATCH, max_size=BATCH))
    def fuzz(calls: list[tuple[str, bytes]]) -> None:
        futures = [callable_for(method).future(payload, timeout=30) for method, payload in calls]
        for future, (method, payload) in zip(futures, calls):
            try:
                future.result()
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
                assert code not in SERVER_ERRORS, (code, exc.details(), method, payload[:200])
            codes[code] = codes.get(code, 0) + 1

    fuzz()
    assert sum(codes.values()) >= GRPC_EXAMPLES * BATCH
    assert codes.get(grpc.StatusCode.INVALID_ARGUMENT, 0) >= 0.9 * sum(codes.values()), codes
    for channel in channels.values():
        channel.close()
    answer_a_valid_request(predictor)


def answer_a_valid_request(predictor: PredictorProcess) -> None:
    assert predictor.proc.poll() is None, "the predictor died"
    rows = {k: v[:3] for k, v in VALID.items()}
    reply = httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", json=v2_json(rows), timeout=30)
    assert reply.status_code == 200, reply.text
    assert len(predictor.inference().ModelInfer(v2_grpc(rows), timeout=30).outputs) == 2
