"""The logical model on KServe's endpoints: V2 (REST and gRPC) and V1 REST requests in, scores and arms out.

V2 outputs, one value per row:
    probability  FP32   the serving arm's click probability
    arm          INT32  which arm served the row: 1 teacher, 2 student (the values of crossadapt.v1.Arm)
and response parameters `teacher_checkpoint`, `student_checkpoint`, `student_rows`. The response id
is the request's id (generated when the request has none); a row's id for feedback is its
`row_id` input when given, else "<response id>/<row index>".

V1: ``{"instances": [{field: value, ...}, ...], "id": optional}`` →
``{"id": ..., "predictions": [p, ...], "arms": ["teacher" | "student", ...]}``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from kserve import Model
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse, RequestedOutput

from services.common.errors import InternalError, InvalidArgumentError, PlatformError
from services.predictor.arms import ARM_NAMES
from services.predictor.engine import PredictorEngine, ScoredRows
from services.predictor.features import (
    RequestColumns,
    check_request_id,
    grpc_columns,
    v1_columns,
    v2_columns,
    wire_columns,
)

log = logging.getLogger(__name__)
OUTPUTS = ("probability", "arm")
_ARM_TEXT = np.array(["", *ARM_NAMES.values()], dtype=object)


class PredictorModel(Model):
    """A KServe model whose `predict` routes each row to the teacher or the student."""

    def __init__(self, name: str, engine: PredictorEngine | None = None) -> None:
        super().__init__(name)
        self.engine = engine
        self.ready = engine is not None  # not ready (KServe answers 503/not ready) until both arms have loaded

    def attach(self, engine: PredictorEngine) -> None:
        """Both arms have loaded: serve them."""
        self.engine = engine
        self.ready = True

    def load(self) -> bool:
        return self.ready

    def get_input_types(self) -> list[dict[str, Any]]:
        return self.engine.schema.input_types() if self.engine is not None else []

    def get_output_types(self) -> list[dict[str, Any]]:
        return [{"name": "probability", "datatype": "FP32", "shape": [-1]},
                {"name": "arm", "datatype": "INT32", "shape": [-1]}]

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        try:
            if isinstance(payload, InferRequest):
                return await self._predict_v2(payload)
            return await self._predict_v1(payload)
        except PlatformError:
            raise
        except Exception as exc:  # a bug, not the caller's mistake: INTERNAL, logged with its trace
            log.exception("prediction failed")
            raise InternalError(f"prediction failed: {type(exc).__name__}: {exc}") from exc

    async def _predict_v2(self, request: InferRequest) -> InferResponse:
        # A GrpcInferRequest: the common request is read from its bytes (or from its message when it has none);
        # both readers take exactly the same requests (tests/predictor/test_predictor_wire.py).
        raw, message = getattr(request, "raw", None), getattr(request, "message", None)
        columns = None
        if raw is not None:
            columns = wire_columns(raw, self.engine.schema)
        elif message is not None:
            columns = grpc_columns(message, self.engine.schema)
        if columns is None:
            columns = v2_columns(request.inputs, self.engine.schema, typed_contents=bool(request.from_grpc))
        return await self.answer_v2(columns, request.id, request.request_outputs, bool(request.use_binary_outputs))

    async def answer_v2(self, columns: RequestColumns, request_id: Any, requested: list[RequestedOutput] | None,
                        binary: bool) -> InferResponse:
        """Score the columns and answer as V2 (the outputs `requested`, or all; raw bytes if `binary`)."""
        request_id = check_request_id(request_id)
        wanted = [o.name for o in requested or []]
        unknown = [n for n in wanted if n not in OUTPUTS]
        if unknown:
            raise InvalidArgumentError(f"unknown output {unknown[0]!r} (the model has {list(OUTPUTS)})", field="outputs")
        scored = await self.engine.score(columns, request_id)
        values = {"probability": scored.probabilities, "arm": scored.served.astype(np.int32)}
        outputs = []
        for name in wanted or OUTPUTS:
            datatype = "FP32" if name == "probability" else "INT32"
            if binary:  # raw bytes (a plain ndarray as `data` fails KServe's gRPC encoding with several rows)
                output = InferOutput(name=name, shape=[columns.rows], datatype=datatype)
                output.set_data_from_numpy(values[name], binary_data=True)
            else:  # one C-level tolist(), not KServe's per-value .item() loop
                output = InferOutput(name=name, shape=[columns.rows], datatype=datatype, data=values[name].tolist())
            outputs.append(output)
        return InferResponse(response_id=scored.request_id, model_name=self.name, infer_outputs=outputs,
                             parameters=self._parameters(scored), use_binary_outputs=binary,
                             requested_outputs=requested)

    async def _predict_v1(self, payload: Any) -> dict[str, Any]:
        request_id = check_request_id(payload.get("id")) if isinstance(payload, dict) else None
        columns = v1_columns(payload, self.engine.schema)
        scored = await self.engine.score(columns, request_id)
        return {"id": scored.request_id, "predictions": scored.probabilities.tolist(),
                "arms": _ARM_TEXT[scored.served].tolist()}

    @staticmethod
    def _parameters(scored: ScoredRows) -> dict[str, Any]:
        return {"teacher_checkpoint": scored.pair.teacher.ref, "student_checkpoint": scored.pair.student.ref,
                "student_rows": int((scored.served == 2).sum())}
