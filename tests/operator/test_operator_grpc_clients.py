"""The gRPC side of the operator's clients: what goes on the wire and how answers and errors come back.

One in-process gRPC server plays every service with the generated servicers of services/common/proto:
it records each request and answers with operations it keeps, so the adapter's field mapping is
checked against the real protos (a renamed field or message breaks these tests).
"""

from __future__ import annotations

import copy
import math
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from datetime import datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from operator_harness import SPEC
from operators.modelswitch.clients import (
    Arm,
    CheckpointRef,
    Clients,
    GrpcPredictor,
    GrpcServices,
    OperationState,
    Service,
    ServiceRejected,
    ServiceUnavailable,
    Split,
)
from operators.modelswitch.reconcile import Observed, reconcile
from operators.modelswitch.settings import OperatorSettings
from services.common.proto import (
    common_pb2,
    drift_detector_pb2,
    drift_detector_pb2_grpc,
    offline_distiller_pb2,
    offline_distiller_pb2_grpc,
    online_codistiller_pb2,
    online_codistiller_pb2_grpc,
    operations_pb2,
    operations_pb2_grpc,
    predictor_pb2,
    predictor_pb2_grpc,
    projector_pb2,
    projector_pb2_grpc,
    sampler_pb2,
    sampler_pb2_grpc,
)


class FakePlatformServer(projector_pb2_grpc.ProjectorServiceServicer, sampler_pb2_grpc.SamplerServiceServicer,
                         offline_distiller_pb2_grpc.OfflineDistillerServiceServicer,
                         drift_detector_pb2_grpc.DriftDetectorServiceServicer,
                         online_codistiller_pb2_grpc.OnlineCoDistillerServiceServicer,
                         operations_pb2_grpc.OperationsServiceServicer,
                         predictor_pb2_grpc.PredictorAdminServiceServicer):
    """Every service at once; operations finish on their first GetOperation."""

    def __init__(self) -> None:
        self.requests: dict[str, list[Any]] = {}
        self.operations: dict[str, common_pb2.Operation] = {}
        self.results: dict[str, common_pb2.Operation] = {}
        self.split = predictor_pb2.Split(student_weight=0.0, salt="")
        self.arms = {predictor_pb2.ARM_TEACHER: common_pb2.CheckpointRef(name="ctr/mlp-teacher", version="v000003"),
                     predictor_pb2.ARM_STUDENT: common_pb2.CheckpointRef()}
        self.lock = threading.Lock()

    def _start(self, kind: str, request: Any, result: common_pb2.Operation) -> common_pb2.Operation:
        with self.lock:
            self.requests.setdefault(kind, []).append(request)
            op_id = f"{kind}-{len(self.operations) + 1}"
            self.operations[op_id] = common_pb2.Operation(id=op_id, kind=kind,
                                                          state=common_pb2.OPERATION_STATE_PENDING)
            result.id, result.kind = op_id, kind
            self.results[op_id] = result
            return self.operations[op_id]

    @staticmethod
    def _done(**result: Any) -> common_pb2.Operation:
        operation = common_pb2.Operation(state=common_pb2.OPERATION_STATE_SUCCEEDED, progress=1.0, stage="done",
                                         **result)
        return operation

    def StartProjection(self, request, context):  # noqa: ANN001, ANN201, N802
        result = self._done(checkpoint=common_pb2.CheckpointRef(name=request.student_name, version="v000001"))
        return projector_pb2.StartProjectionResponse(operation=self._start("projection", request, result))

    def StartSampling(self, request, context):  # noqa: ANN001, ANN201, N802
        result = self._done(dataset=common_pb2.DatasetRef(name=request.sample_name))
        result.details.update({"rows": 1200, "positive_rate": 0.5})
        return sampler_pb2.StartSamplingResponse(operation=self._start("sampling", request, result))

    def StartDistillation(self, request, context):  # noqa: ANN001, ANN201, N802
        if not request.student_model.architecture:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "student_model.architecture is required")
        result = self._done(checkpoint=common_pb2.CheckpointRef(name=request.student_name, version="v000001"))
        return offline_distiller_pb2.StartDistillationResponse(operation=self._start("distillation", request, result))

    def ComputeDrift(self, request, context):  # noqa: ANN001, ANN201, N802
        result = self._done()
        result.details.update({"replay_ratio": 0.06, "reference": {"shift": 0.012}})
        return drift_detector_pb2.ComputeDriftResponse(operation=self._start("drift", request, result))

    def StartCoDistillation(self, request, context):  # noqa: ANN001, ANN201, N802
        result = self._done(checkpoint=common_pb2.CheckpointRef(name=request.student_name, version="v000004"))
        result.details.update({"teacher": f"{request.teacher_name}/v000004", "batches": 120})
        return online_codistiller_pb2.StartCoDistillationResponse(
            operation=self._start("codistillation", request, result))

    def GetOperation(self, request, context):  # noqa: ANN001, ANN201, N802
        with self.lock:
            if request.operation_id not in self.operations:
                context.abort(grpc.StatusCode.NOT_FOUND, f"no operation {request.operation_id}")
            self.operations[request.operation_id] = self.results[request.operation_id]
            return operations_pb2.GetOperationResponse(operation=self.operations[request.operation_id])

    def CancelOperation(self, request, context):  # noqa: ANN001, ANN201, N802
        with self.lock:
            operation = self.operations[request.operation_id]
            operation.state = common_pb2.OPERATION_STATE_CANCELLED
            operation.error.CopyFrom(common_pb2.OperationError(code=1, code_name="CANCELLED", message="by caller"))
            return operations_pb2.CancelOperationResponse(operation=operation)

    def SetSplit(self, request, context):  # noqa: ANN001, ANN201, N802
        if not 0.0 <= request.split.student_weight <= 1.0:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "student_weight must lie in [0, 1]")
        with self.lock:
            self.requests.setdefault("split", []).append(request)
            self.split = copy.deepcopy(request.split)
            return predictor_pb2.SetSplitResponse(split=self.split)

    def GetSplit(self, request, context):  # noqa: ANN001, ANN201, N802
        return predictor_pb2.GetSplitResponse(split=self.split)

    def SwapArm(self, request, context):  # noqa: ANN001, ANN201, N802
        with self.lock:
            self.requests.setdefault("swap", []).append(request)
            version = request.checkpoint.version or "v000009"
            self.arms[request.arm] = common_pb2.CheckpointRef(name=request.checkpoint.name, version=version)
            return predictor_pb2.SwapArmResponse(arm=predictor_pb2.ArmMetrics(arm=request.arm,
                                                                                checkpoint=self.arms[request.arm]))

    def GetArmMetrics(self, request, context):  # noqa: ANN001, ANN201, N802
        with self.lock:
            self.requests.setdefault("metrics", []).append(request)
            interval = predictor_pb2.ConfidenceInterval
            return predictor_pb2.GetArmMetricsResponse(
                teacher=predictor_pb2.ArmMetrics(arm=predictor_pb2.ARM_TEACHER,
                                                 checkpoint=self.arms[predictor_pb2.ARM_TEACHER]),
                student=predictor_pb2.ArmMetrics(arm=predictor_pb2.ARM_STUDENT,
                                                 checkpoint=self.arms[predictor_pb2.ARM_STUDENT]),
                split=self.split, paired_rows=250_000,
                delta_auc=interval(estimate=0.001, lower=0.0002, upper=0.0018, level=0.95),
                delta_logloss=interval(estimate=-0.001, lower=-0.002, upper=0.0, level=0.95),
                student_pcoc=interval(estimate=1.0, lower=0.98, upper=1.02, level=0.95),
                teacher_pcoc=interval(estimate=math.nan, lower=math.nan, upper=math.nan, level=0.95))


@pytest.fixture
def served() -> Iterator[tuple[FakePlatformServer, str]]:
    fake = FakePlatformServer()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    for add in (projector_pb2_grpc.add_ProjectorServiceServicer_to_server,
                sampler_pb2_grpc.add_SamplerServiceServicer_to_server,
                offline_distiller_pb2_grpc.add_OfflineDistillerServiceServicer_to_server,
                drift_detector_pb2_grpc.add_DriftDetectorServiceServicer_to_server,
                online_codistiller_pb2_grpc.add_OnlineCoDistillerServiceServicer_to_server,
                operations_pb2_grpc.add_OperationsServiceServicer_to_server,
                predictor_pb2_grpc.add_PredictorAdminServiceServicer_to_server):
        add(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield fake, f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None)


def _clients(address: str) -> Clients:
    settings = OperatorSettings(**{f"{name}_address": address for name in (
        "projector", "sampler", "offline_distiller", "online_codistiller", "drift_detector", "predictor")},
        rpc_timeout_s=5)
    return settings.grpc_clients()


def test_a_switch_runs_to_promoted_over_grpc(served: tuple[FakePlatformServer, str]) -> None:
    """Every call of a whole switch goes through the generated stubs and comes back intact."""
    fake, address = served
    clients, status, now = _clients(address), {}, datetime(2026, 12, 1, tzinfo=timezone.utc)
    for _ in range(40):
        spec = {**copy.deepcopy(SPEC), "optim": {"batchSize": 512, "embeddingLr": 0.0125, "denseLr": 0.002}}
        observed = Observed(name="sw", namespace="ml", uid="u-1", generation=1, spec=spec, status=status,
                            action=None, now=now)
        status = reconcile(observed, clients).status
        now += timedelta(seconds=1)
        if status.get("phase") == "Promoted":
            break
    assert status["phase"] == "Promoted", status.get("message")

    (projection,) = fake.requests["projection"]
    assert (projection.teacher.name, projection.teacher.version, projection.width) == ("ctr/mlp-teacher",
                                                                                       "v000003", 16)
    assert projection.student_name == "modelswitch/ml/sw/projected" and projection.request_id.endswith("/0")
    (sampling,) = fake.requests["sampling"]
    assert (sampling.dataset.name, sampling.config.ratio, sampling.config.positive_ratio,
            sampling.config.temporal_blocks) == ("ctr/train", 0.1, 0.5, 10)
    (distillation,) = fake.requests["distillation"]
    assert distillation.student.name == "modelswitch/ml/sw/projected"
    assert distillation.sample.name == "modelswitch/ml/sw/sample"
    assert (distillation.config.kd_weight, distillation.config.temperature, distillation.config.frozen_epochs,
            distillation.config.joint_epochs) == (0.7, 4.0, 1, 1)
    assert (distillation.config.batch_size, distillation.config.embedding_lr, distillation.config.dense_lr) == (
        512, 0.0125, 0.002)
    assert (distillation.student_model.architecture, distillation.student_model.embedding_dim,
            list(distillation.student_model.hidden)) == ("fibinet", 16, [256, 128, 16])
    (drift,) = fake.requests["drift"]
    assert (drift.reference.name, drift.stream.name, drift.config.metric, drift.config.low,
            drift.config.high) == ("ctr/train", "ctr/stream", "js", 0.01, 0.05)
    (codistillation,) = fake.requests["codistillation"]
    assert codistillation.student.name == "modelswitch/ml/sw/offline" and not codistillation.follow
    # A spec without the switch's newer options leaves them unset: the request earlier operators sent.
    assert not distillation.config.HasField("kd_gate") and not codistillation.config.HasField("collaborative")
    assert (codistillation.replay.name, codistillation.config.teacher_update_interval,
            codistillation.config.drift.max_replay) == ("ctr/train", 10, 0.1)
    assert (codistillation.config.batch_size, codistillation.config.embedding_lr,
            codistillation.config.dense_lr) == (512, 0.0125, 0.002)

    assert [r.split.student_weight for r in fake.requests["split"]] == [0.0, 0.05, 0.25, 0.5, 1.0, 0.0]
    assert len({r.split.salt for r in fake.requests["split"]}) == 1
    assert [(r.arm, r.checkpoint.name) for r in fake.requests["swap"]] == [
        (predictor_pb2.ARM_STUDENT, "modelswitch/ml/sw/student"), (predictor_pb2.ARM_TEACHER,
                                                                   "modelswitch/ml/sw/student")]
    assert status["artifacts"]["onlineTeacher"] == {"name": "modelswitch/ml/sw/teacher", "version": "v000004"}
    assert status["drift"] == {"reference.shift": 0.012, "replay_ratio": 0.06}
    assert "teacherPcoc" not in status["gate"]  # NaN on the wire: left out, not written as a number


def test_operations_map_back(served: tuple[FakePlatformServer, str]) -> None:
    fake, address = served
    services = _clients(address).services
    from operators.modelswitch.builders import sampling_request
    from operators.modelswitch.models import ModelSwitchSpec

    started = services.start_sampling(sampling_request(ModelSwitchSpec.model_validate(SPEC), "p", "rid-1"))
    assert started.state is OperationState.PENDING and started.id == "sampling-1"
    done = services.get_operation(Service.SAMPLER, started.id)
    assert (done.state, done.dataset, done.checkpoint) == (OperationState.SUCCEEDED, "p/sample", None)
    assert done.details == {"rows": 1200, "positive_rate": 0.5}
    cancelled = services.cancel_operation(Service.SAMPLER, started.id)
    assert (cancelled.state, cancelled.error_code, cancelled.error_message) == (OperationState.CANCELLED,
                                                                                "CANCELLED", "by caller")


def test_a_refused_request_is_rejected_and_a_down_server_unavailable(served: tuple[FakePlatformServer, str]) -> None:
    _, address = served
    services = _clients(address).services
    with pytest.raises(ServiceRejected) as rejected:
        services.get_operation(Service.PROJECTOR, "nope")
    assert rejected.value.code == "NOT_FOUND" and rejected.value.service is Service.PROJECTOR
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{sock.getsockname()[1]}"
    down = GrpcServices({service: dead for service in Service}, timeout_s=2)
    with pytest.raises(ServiceUnavailable) as unavailable:
        down.get_operation(Service.PROJECTOR, "x")
    assert unavailable.value.code in ("UNAVAILABLE", "DEADLINE_EXCEEDED")


def test_predictor_admin_round_trip(served: tuple[FakePlatformServer, str]) -> None:
    fake, address = served
    predictor = GrpcPredictor(address, timeout_s=5)
    predictor.set_split(Split(0.25, "salt-1"))
    assert predictor.get_split() == Split(0.25, "salt-1")
    predictor.swap_arm(Arm.STUDENT, CheckpointRef("s/student", ""))
    metrics = predictor.arm_metrics(30.0)
    assert fake.requests["metrics"][-1].window_seconds == 30.0
    assert metrics.student_checkpoint == CheckpointRef("s/student", "v000009")
    assert metrics.teacher_checkpoint == CheckpointRef("ctr/mlp-teacher", "v000003")
    assert metrics.split == Split(0.25, "salt-1") and metrics.paired.paired_rows == 250_000
    assert (metrics.paired.delta_auc.lower, metrics.paired.delta_auc.upper) == (0.0002, 0.0018)
    assert not metrics.paired.teacher_pcoc.known
    with pytest.raises(ServiceRejected) as rejected:
        predictor.set_split(Split(1.5, "salt-1"))
    assert rejected.value.code == "INVALID_ARGUMENT"


def test_an_unset_interval_is_unknown_not_zero() -> None:
    from operators.modelswitch.clients import _interval

    response = predictor_pb2.GetArmMetricsResponse(paired_rows=10)
    assert not _interval(response, "delta_auc").known
    response.delta_auc.CopyFrom(predictor_pb2.ConfidenceInterval())
    assert not _interval(response, "delta_auc").known
    response.delta_auc.CopyFrom(predictor_pb2.ConfidenceInterval(estimate=0, lower=0, upper=0, level=0.95))
    assert _interval(response, "delta_auc").known  # a measured [0, 0] at 95% is a real figure


# ------------------------------------------------- the switch's options, built through the real protos


def _sent(spec: dict[str, Any]) -> tuple[Any, Any]:
    """The offline distiller's and the co-distiller's request messages that `spec` builds (captured before
    any channel is used)."""
    from operators.modelswitch import builders
    from operators.modelswitch.models import ModelSwitchSpec

    services = GrpcServices({}, timeout_s=1)
    sent: list[Any] = []
    services._start = lambda service, module, stub, method, message: sent.append(message)  # type: ignore[method-assign]
    parsed = ModelSwitchSpec.model_validate(spec)
    services.start_distillation(builders.distillation_request(parsed, "p", CheckpointRef("p/projected", "v000001"),
                                                              "p/sample", "rid-1"))
    services.start_codistillation(builders.codistillation_request(parsed, "p", CheckpointRef("p/offline", "v000001"),
                                                                  "rid-2"))
    distillation, codistillation = sent
    assert isinstance(distillation, offline_distiller_pb2.StartDistillationRequest)
    assert isinstance(codistillation, online_codistiller_pb2.StartCoDistillationRequest)
    return distillation, codistillation


def test_the_switch_options_reach_both_distillers() -> None:
    spec = {**copy.deepcopy(SPEC), "offline": {"distillation": {"kdGate": "all"}, "reuseTeacherNetwork": False},
            "online": {"drift": {"rolling": True, "windowRows": 5000},
                       "collaborative": {"weight": 0.5, "gate": "gap", "scaleByT2": False}}}
    distillation, codistillation = _sent(spec)
    assert distillation.config.kd_gate == "all" and codistillation.config.kd_gate == "all"
    assert distillation.config.HasField("reuse_teacher_network") and not distillation.config.reuse_teacher_network
    drift = codistillation.config.drift
    assert (drift.rolling, drift.window_rows, drift.metric, drift.max_replay) == (True, 5000, "js", 0.1)
    collaborative = codistillation.config.collaborative
    assert codistillation.config.HasField("collaborative")
    # Every field set; the one the spec left out (temperature) is the core's default, 1.
    assert {d.name: v for d, v in collaborative.ListFields()} == {
        "weight": 0.5, "temperature": 1.0, "gate": "gap", "scale_by_t2": False}


def test_an_empty_collaborative_section_is_the_cores_defaults() -> None:
    _, codistillation = _sent({**copy.deepcopy(SPEC), "online": {"collaborative": {}}})
    assert {d.name: v for d, v in codistillation.config.collaborative.ListFields()} == {
        "weight": 1.0, "temperature": 1.0, "gate": "student_better", "scale_by_t2": True}


def test_the_defaults_leave_the_new_fields_unset() -> None:
    """Absent collaborative sends no message; the default kdGate and rolling: false are what the services
    read from unset fields, so they stay unset and a default spec's request is byte for byte the one an
    operator without these options sent (a replayed request_id must match its first parameters)."""
    from google.protobuf.json_format import MessageToDict

    distillation, codistillation = _sent(copy.deepcopy(SPEC))
    assert not codistillation.config.HasField("collaborative")
    assert not distillation.config.HasField("kd_gate") and not codistillation.config.HasField("kd_gate")
    assert not distillation.config.HasField("reuse_teacher_network")
    drift = codistillation.config.drift
    assert not drift.HasField("rolling") and not drift.HasField("window_rows")
    wire = MessageToDict(codistillation, preserving_proto_field_name=True)["config"]
    assert "collaborative" not in wire and "kd_gate" not in wire and set(wire["drift"]) == {
        "metric", "windows", "bins", "low", "high", "max_replay"}
    # a window size without rolling does nothing, so it is not sent either
    _, codistillation = _sent({**copy.deepcopy(SPEC), "online": {"drift": {"windowRows": 10}}})
    assert not codistillation.config.drift.HasField("window_rows")


@pytest.mark.parametrize("options", [False, True], ids=["defaults", "options"])
def test_the_distillers_read_what_the_spec_says(options: bool) -> None:
    """The services' own config parsing of the operator's messages (unset fields included) gives the
    spec's settings: the defaults left unset read as the spec's defaults. Imports the core (torch)."""
    from services.offline_distiller.config import DistillationSettings
    from services.online_codistiller.config import CoDistillationSettings

    spec = copy.deepcopy(SPEC)
    if options:
        spec |= {"offline": {"distillation": {"kdGate": "all"}},
                 "online": {"drift": {"rolling": True, "windowRows": 64}, "collaborative": {"gate": "all"}}}
    distillation, codistillation = _sent(spec)
    offline = DistillationSettings.from_proto(distillation.config)
    online = CoDistillationSettings.from_proto(codistillation.config)
    gate = "all" if options else "teacher_better"
    assert offline.distillation.kd_gate == online.distillation.kd_gate == gate
    assert (online.online.drift.rolling, online.online.drift.window_rows) == ((True, 64) if options else
                                                                              (False, 100_000))
    if options:
        assert online.online.collaborative is not None
        assert online.online.collaborative.model_dump() == {"weight": 1.0, "temperature": 1.0, "gate": "all",
                                                             "scale_by_t2": True}
    else:
        assert online.online.collaborative is None
