"""The admin API: `crossadapt.v1.PredictorAdminService` over gRPC, and feedback / figures over REST.

gRPC (port `CROSSADAPT_GRPC_PORT`, 50056 in images): SetSplit, GetSplit, SwapArm, GetArmMetrics,
SubmitFeedback, FlushExposureLog. REST, next to KServe's endpoints:

    POST /v2/models/<model>/feedback   {"row_ids": ["<id>", ...], "labels": [0, 1, ...]} -> {"matched", "unknown"}
    GET  /v2/models/<model>/arms?window_seconds=0                                       -> GetArmMetrics as JSON
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from google.protobuf.json_format import MessageToDict
from google.protobuf.timestamp_pb2 import Timestamp
from pydantic import BaseModel, ConfigDict, StrictFloat, StrictInt, StrictStr, ValidationError

from services.common.errors import InvalidArgumentError, UnavailableError
from services.common.proto import common_pb2, predictor_pb2, predictor_pb2_grpc
from services.predictor.arm_metrics import ArmFigures, WindowFigures
from services.predictor.arms import ARM_NAMES, LoadedArm
from services.predictor.bootstrap import Interval
from services.predictor.engine import PredictorEngine
from services.predictor.kserve_server import validation_error
from services.predictor.routing import Split
from services.predictor.settings import CheckpointSpec

SERVICE_NAME = predictor_pb2.DESCRIPTOR.services_by_name["PredictorAdminService"].full_name


# ---- messages -----------------------------------------------------------------------------------
def split_message(split: Split) -> predictor_pb2.Split:
    return predictor_pb2.Split(student_weight=split.student_weight, salt=split.salt)


def checkpoint_message(ref: str) -> common_pb2.CheckpointRef:
    name, _, version = ref.rpartition("/")
    return common_pb2.CheckpointRef(name=name, version=version)


def arm_message(figures: ArmFigures) -> predictor_pb2.ArmMetrics:
    return predictor_pb2.ArmMetrics(
        arm=figures.arm, checkpoint=checkpoint_message(figures.checkpoint), served_rows=figures.served_rows,
        scored_rows=figures.scored_rows, labelled_rows=figures.labelled_rows, auc=figures.auc,
        logloss=figures.logloss, pcoc=figures.pcoc, unknown_values=figures.unknown_values)


def interval_message(interval: Interval) -> predictor_pb2.ConfidenceInterval:
    return predictor_pb2.ConfidenceInterval(estimate=interval.estimate, lower=interval.lower, upper=interval.upper,
                                            level=interval.level)


def metrics_response(figures: WindowFigures, split: Split, dropped: int) -> predictor_pb2.GetArmMetricsResponse:
    start = Timestamp()
    start.FromNanoseconds(int(figures.window_start * 1e9))
    paired = figures.paired
    return predictor_pb2.GetArmMetricsResponse(
        teacher=arm_message(figures.teacher), student=arm_message(figures.student), split=split_message(split),
        paired_rows=paired.rows, delta_auc=interval_message(paired.delta_auc),
        delta_logloss=interval_message(paired.delta_logloss), student_pcoc=interval_message(paired.student_pcoc),
        teacher_pcoc=interval_message(paired.teacher_pcoc), window_start=start, shadow_dropped_rows=dropped)


def fresh_arm_message(loaded: LoadedArm) -> predictor_pb2.ArmMetrics:
    nan = math.nan
    return arm_message(ArmFigures(arm=loaded.arm, checkpoint=loaded.ref, served_rows=0, scored_rows=0,
                                  labelled_rows=0, auc=nan, logloss=nan, pcoc=nan, unknown_values=0))


# ---- gRPC ---------------------------------------------------------------------------------------
class PredictorAdminServicer(predictor_pb2_grpc.PredictorAdminServiceServicer):
    """Handlers raise PlatformError; the interceptor maps it through the one error table."""

    def __init__(self, engine: PredictorEngine) -> None:
        self.engine = engine

    async def SetSplit(self, request, context):  # noqa: ANN001, ANN201, N802 - gRPC API
        if not request.HasField("split"):
            raise InvalidArgumentError("split is required", field="split")
        split = self.engine.set_split(Split(request.split.student_weight, request.split.salt))
        return predictor_pb2.SetSplitResponse(split=split_message(split))

    async def GetSplit(self, request, context):  # noqa: ANN001, ANN201, N802
        return predictor_pb2.GetSplitResponse(split=split_message(self.engine.split))

    async def SwapArm(self, request, context):  # noqa: ANN001, ANN201, N802
        if request.arm not in ARM_NAMES:
            raise InvalidArgumentError("arm must be ARM_TEACHER or ARM_STUDENT", field="arm")
        if not request.checkpoint.name:
            raise InvalidArgumentError("checkpoint.name is required", field="checkpoint.name")
        spec = CheckpointSpec(request.checkpoint.name, request.checkpoint.version or None)
        loaded = await self.engine.swap(request.arm, spec)
        return predictor_pb2.SwapArmResponse(arm=fresh_arm_message(loaded))

    async def GetArmMetrics(self, request, context):  # noqa: ANN001, ANN201, N802
        figures = await self.engine.figures(request.window_seconds)
        return metrics_response(figures, self.engine.split, self.engine.shadow_dropped_rows)

    async def SubmitFeedback(self, request, context):  # noqa: ANN001, ANN201, N802
        matched, unknown = self.engine.add_labels(list(request.row_ids), list(request.labels))
        return predictor_pb2.SubmitFeedbackResponse(matched=matched, unknown=unknown)

    async def FlushExposureLog(self, request, context):  # noqa: ANN001, ANN201, N802
        result = await self.engine.flush()
        return predictor_pb2.FlushExposureLogResponse(rows=result.rows, dataset=self.engine.exposure_dataset,
                                                      partitions=result.partitions)


# ---- REST ---------------------------------------------------------------------------------------
class FeedbackBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    row_ids: list[StrictStr]
    labels: list[StrictInt | StrictFloat]


def _check_model(engine: PredictorEngine, model_name: str) -> None:
    if model_name != engine.model:
        raise InvalidArgumentError(f"no model named {model_name!r}", field="model_name")


def _loaded(engine_of: Callable[[], PredictorEngine | None], model_name: str) -> PredictorEngine:
    """The engine once both arms have loaded; UNAVAILABLE (503) while a checkpoint is still missing."""
    engine = engine_of()
    if engine is None:
        raise UnavailableError(f"model {model_name!r} is not ready: its checkpoints have not loaded yet")
    _check_model(engine, model_name)
    return engine


def add_admin_routes(engine_of: Callable[[], PredictorEngine | None]) -> Any:
    """A function that adds the REST admin routes to KServe's FastAPI app (the engine may load later)."""

    async def feedback(model_name: str, request: Request) -> dict[str, int]:
        engine = _loaded(engine_of, model_name)
        try:
            body = FeedbackBody.model_validate(orjson.loads(await request.body()))
        except orjson.JSONDecodeError as exc:
            raise InvalidArgumentError(f"the body is not JSON: {exc}", field="body") from exc
        except ValidationError as exc:
            raise validation_error(exc.errors()) from exc
        matched, unknown = engine.add_labels(body.row_ids, [float(v) for v in body.labels])
        return {"matched": matched, "unknown": unknown}

    async def arms(model_name: str, window_seconds: str = "0") -> dict[str, Any]:
        engine = _loaded(engine_of, model_name)
        try:
            window = float(window_seconds)
        except ValueError as exc:
            raise InvalidArgumentError(f"not a number: {window_seconds!r}", field="window_seconds") from exc
        figures = await engine.figures(window)
        message = metrics_response(figures, engine.split, engine.shadow_dropped_rows)
        return MessageToDict(message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)

    def add(app: FastAPI) -> None:
        app.add_api_route("/v2/models/{model_name}/feedback", feedback, methods=["POST"])
        app.add_api_route("/v2/models/{model_name}/arms", arms, methods=["GET"])

    return add
