"""V2 JSON inference on KServe's REST server, with the common request read without KServe's request models.

KServe's V2 REST route validates a body into pydantic models (`InferenceRequest`, one `RequestInput`
per input), builds an `InferRequest` with one `InferInput` each, and serializes the answer through
FastAPI's `jsonable_encoder`: for a Criteo row of 40 inputs, work of the order of the prediction
itself. `JsonInferRoute` serves the same path ahead of KServe's route. A body that is the common
request (`features.json_columns`: every input a flat list of its field) is parsed once with orjson,
scored by the model (`PredictorModel.answer_v2`, the answer the gRPC and KServe paths give) and
written through KServe's response model; anything else (binary tensors, parameters, requested
outputs, a malformed body) goes to KServe's own handler with KServe's validation, so its answers and
errors are KServe's.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from kserve.errors import ModelNotReady
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.rest.v2_datamodels import InferenceRequest, InferenceResponse
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from pydantic import ValidationError

from services.predictor.features import json_columns
from services.predictor.kserve_server import validation_error
from services.predictor.model import PredictorModel

BINARY_HEADER = "inference-header-content-length"  # KServe's binary tensor extension: KServe reads those


class JsonInferRoute:
    """``POST /v2/models/{model_name}/infer``: the common JSON request read directly, the rest by KServe."""

    def __init__(self, model: PredictorModel, dataplane: DataPlane, repository_extension: Any) -> None:
        self.model = model
        self.dataplane = dataplane
        self.kserve = V2Endpoints(dataplane, repository_extension)

    def add_to(self, app: FastAPI) -> None:
        """Register the route (before KServe's: the first route that matches a path serves it)."""
        app.add_api_route("/v2/models/{model_name}/infer", self.infer, methods=["POST"], response_model=None,
                          include_in_schema=False)

    async def infer(self, model_name: str, request: Request, response: Response) -> Response:
        if not await self.dataplane.model_ready(model_name, True):  # an unknown name raises, as KServe's route does
            raise ModelNotReady(model_name)
        body = await request.body()
        if BINARY_HEADER not in request.headers and model_name == self.model.name and self.model.engine is not None:
            try:
                payload = orjson.loads(body)
            except orjson.JSONDecodeError:
                payload = None  # KServe's validation says what is wrong
            columns = json_columns(payload, self.model.engine.schema)
            if columns is not None:
                answer = await self.model.answer_v2(columns, payload.get("id"), None, binary=False)
                content, _ = answer.to_rest()  # then KServe's response model, as its route answers
                return Response(InferenceResponse.model_validate(content).model_dump_json(by_alias=True),
                                media_type="application/json")
        return await self._kserve(model_name, request, response, body)

    async def _kserve(self, model_name: str, request: Request, response: Response, body: bytes) -> Response:
        """KServe's handler, given what FastAPI would have given it: the validated body, or the bytes of a binary one."""
        if BINARY_HEADER in request.headers:
            validated: InferenceRequest | bytes = body
        else:
            try:
                validated = InferenceRequest.model_validate_json(body)
            except ValidationError as exc:
                raise validation_error(exc.errors()) from exc
        answer = await self.kserve.infer(request, response, model_name, validated)
        if isinstance(answer, Response):
            return answer
        headers = {k: v for k, v in response.headers.items() if k not in ("content-length", "content-type")}
        return Response(orjson.dumps(jsonable_encoder(answer)), media_type="application/json", headers=headers)
