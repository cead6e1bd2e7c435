"""The operator's view of the platform: Protocols for the services and the predictor, and their gRPC form.

Everything the operator asks of the world goes through two small Protocols:

* `TransferServices` — start the long-running stages (projection, sampling, offline distillation,
  drift, online co-distillation) and follow them through each server's `OperationsService`;
* `PredictorAdmin` — the predictor's admin API: the traffic split, which checkpoint each arm serves,
  and the paired per-arm metrics the gates read.

`GrpcServices` and `GrpcPredictor` implement them over the generated stubs in
`services/common/proto` (imported on first use, so importing this module loads no gRPC). Errors
come back as `ServiceUnavailable` (worth retrying: the server is down, slow or overloaded) or
`ServiceRejected` (the request itself is wrong: retrying the same request cannot help).
"""

from __future__ import annotations

import importlib
import math
import threading
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from operators.modelswitch.decisions import UNKNOWN, Interval, PairedMetrics



# ------------------------------------------------------------------------------------------ the types


@dataclass(frozen=True)
class CheckpointRef:
    name: str
    version: str = ""  # "" or "latest": the newest complete version


class OperationState(str, Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    @property
    def terminal(self) -> bool:
        return self in (OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED)


@dataclass(frozen=True)
class Operation:
    """A long-running operation as a service reports it."""

    id: str
    state: OperationState
    progress: float = 0.0
    stage: str = ""
    error_code: str = ""
    error_message: str = ""
    checkpoint: CheckpointRef | None = None  # the result, once SUCCEEDED, for checkpoint-producing kinds
    dataset: str | None = None  # the result, once SUCCEEDED, for dataset-producing kinds
    details: dict[str, Any] = field(default_factory=dict)


class Service(str, Enum):
    """The servers the operator calls; each also serves `OperationsService` for its own operations."""

    PROJECTOR = "projector"
    SAMPLER = "sampler"
    OFFLINE_DISTILLER = "offline-distiller"
    ONLINE_CODISTILLER = "online-codistiller"
    DRIFT_DETECTOR = "drift-detector"
    PREDICTOR = "predictor"


@dataclass(frozen=True)
class ProjectionRequest:
    teacher: CheckpointRef
    student_name: str
    width: int
    seed: int
    request_id: str


@dataclass(frozen=True)
class SamplingRequest:
    dataset: str
    teacher: CheckpointRef
    ratio: float
    positive_ratio: float
    temporal_blocks: int
    unclicked_ratio: float
    seed: int
    sample_name: str
    request_id: str


@dataclass(frozen=True)
class StudentModel:
    architecture: str
    embedding_dim: int
    hidden: tuple[int, ...]


@dataclass(frozen=True)
class Optimiser:
    """Rows per step and learning rates of a distillation stage (spec.optim)."""

    batch_size: int
    embedding_lr: float
    dense_lr: float

    def fields(self) -> dict[str, float]:
        """The three as the distillers' config messages name them."""
        return {"batch_size": self.batch_size, "embedding_lr": self.embedding_lr, "dense_lr": self.dense_lr}


@dataclass(frozen=True)
class DistillationRequest:
    student: CheckpointRef  # the projected student
    teacher: CheckpointRef
    sample: str
    kd_weight: float
    temperature: float
    frozen_epochs: int
    joint_epochs: int
    seed: int
    student_name: str
    student_model: StudentModel
    request_id: str
    task_logit_shift: float = 0.0  # the prior correction for a class-balanced sample (builders.prior_shift)
    optim: Optimiser | None = None  # None: the service's defaults
    kd_gate: str = "teacher_better"  # 'all' (the paper) or 'teacher_better' (the switch's default)
    reuse_teacher_network: bool = True  # a student of the teacher's own network starts from it (the default)


@dataclass(frozen=True)
class DriftSettings:
    metric: str
    windows: int
    bins: int
    theta_low: float
    theta_high: float
    max_replay: float
    # The co-distiller's only (the drift detector measures the history once): re-estimate from the stream.
    rolling: bool = False
    window_rows: int = 100_000


@dataclass(frozen=True)
class Collaborative:
    """The collaborative teacher's KD term toward the student (the co-distiller's CollaborativeCoDistillation)."""

    weight: float
    temperature: float
    gate: str
    scale_by_t2: bool


@dataclass(frozen=True)
class DriftRequest:
    reference: str
    stream: str
    drift: DriftSettings
    request_id: str


@dataclass(frozen=True)
class CoDistillationRequest:
    student: CheckpointRef
    teacher: CheckpointRef
    stream: str
    replay: str
    teacher_update_interval: int
    kd_weight: float
    temperature: float
    drift: DriftSettings
    seed: int
    student_name: str
    teacher_name: str
    request_id: str
    optim: Optimiser | None = None  # None: the service's defaults
    kd_gate: str = "teacher_better"
    collaborative: Collaborative | None = None  # None: the teacher learns from the labels only (the paper)


class Arm(str, Enum):
    TEACHER = "teacher"
    STUDENT = "student"


@dataclass(frozen=True)
class Split:
    """Share of traffic on the student arm; `salt` keys the sticky per-cohort hash."""

    student_weight: float
    salt: str = ""


@dataclass(frozen=True)
class ArmMetrics:
    """The predictor's window of paired metrics, with what each arm serves and the live split."""

    paired: PairedMetrics
    split: Split | None = None
    teacher_checkpoint: CheckpointRef | None = None
    student_checkpoint: CheckpointRef | None = None


class ServiceError(Exception):
    """A call to a service failed; `code` is the gRPC status name."""

    def __init__(self, service: Service, code: str, message: str) -> None:
        super().__init__(f"{service.value}: {code}: {message}")
        self.service, self.code, self.detail = service, code, message


class ServiceUnavailable(ServiceError):
    """Transient: the server is unreachable, overloaded or timed out; the same call may succeed later."""


class ServiceRejected(ServiceError):
    """Permanent: the server refused this request (bad argument, missing checkpoint, ...)."""


# ------------------------------------------------------------------------------------------ Protocols


class TransferServices(Protocol):
    def start_projection(self, request: ProjectionRequest) -> Operation: ...

    def start_sampling(self, request: SamplingRequest) -> Operation: ...

    def start_distillation(self, request: DistillationRequest) -> Operation: ...

    def compute_drift(self, request: DriftRequest) -> Operation: ...

    def start_codistillation(self, request: CoDistillationRequest) -> Operation: ...

    def get_operation(self, service: Service, operation_id: str) -> Operation: ...

    def cancel_operation(self, service: Service, operation_id: str) -> Operation: ...


class PredictorAdmin(Protocol):
    def set_split(self, split: Split) -> Split: ...

    def get_split(self) -> Split: ...

    def swap_arm(self, arm: Arm, checkpoint: CheckpointRef) -> None: ...

    def arm_metrics(self, window_seconds: float) -> ArmMetrics: ...


@dataclass
class Clients:
    services: TransferServices
    predictor: PredictorAdmin


# ----------------------------------------------------------------------------------------------- gRPC

_TRANSIENT_CODES = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED", "UNKNOWN",
                              "INTERNAL", "CANCELLED"})
_WIRE_STATES = {1: OperationState.PENDING, 2: OperationState.RUNNING, 3: OperationState.SUCCEEDED,
                4: OperationState.FAILED, 5: OperationState.CANCELLED}


def _proto(module: str) -> Any:
    """A generated stub module of services/common/proto, imported when first needed."""
    return importlib.import_module(f"services.common.proto.{module}")


def _error(service: Service, exc: Any) -> ServiceError:
    """A gRPC error as a `ServiceUnavailable` (worth retrying) or a `ServiceRejected` (not)."""
    code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
    kind = ServiceUnavailable if code in _TRANSIENT_CODES else ServiceRejected
    return kind(service, code, (exc.details() if hasattr(exc, "details") else str(exc)) or "")


def operation_from_message(message: Any) -> Operation:
    """`crossadapt.v1.Operation` → `Operation`."""
    from google.protobuf.json_format import MessageToDict

    result = message.WhichOneof("result")
    checkpoint = CheckpointRef(message.checkpoint.name, message.checkpoint.version) if result == "checkpoint" else None
    return Operation(
        id=message.id,
        state=_WIRE_STATES.get(message.state, OperationState.PENDING),
        progress=float(message.progress),
        stage=message.stage,
        error_code=message.error.code_name if message.HasField("error") else "",
        error_message=message.error.message if message.HasField("error") else "",
        checkpoint=checkpoint,
        dataset=message.dataset.name if result == "dataset" else None,
        details=MessageToDict(message.details) if message.HasField("details") else {},
    )


def _checkpoint_message(ref: CheckpointRef) -> Any:
    return _proto("common_pb2").CheckpointRef(name=ref.name, version=ref.version)


def _dataset_message(name: str) -> Any:
    return _proto("common_pb2").DatasetRef(name=name)


# What an unset field means to the distillers, and so the settings left unset on the wire. A spec without
# the switch's newer options (kdGate, reuseTeacherNetwork, rolling drift) thus builds the very request an
# operator without them sent: a service compares a replayed request_id's parameters as sent
# (request_fingerprint), so an operator upgraded while a stage runs must send the same message again, or the
# service refuses it.
_UNSET_KD_GATE = "teacher_better"


def _unless_unset(field: str, value: Any, unset: Any) -> dict[str, Any]:
    """``{field: value}``, or nothing where ``value`` is what the services read from the unset field."""
    return {} if value == unset else {field: value}


def _kd_gate(kd_gate: str) -> dict[str, str]:
    return _unless_unset("kd_gate", kd_gate, _UNSET_KD_GATE)


def _rolling(drift: DriftSettings) -> dict[str, Any]:
    """rolling and its window size, set only when rolling (window_rows means nothing otherwise)."""
    return {"rolling": True, "window_rows": drift.window_rows} if drift.rolling else {}


def _drift_config(module: Any, drift: DriftSettings) -> Any:
    return module.DriftConfig(metric=drift.metric, windows=drift.windows, bins=drift.bins, low=drift.theta_low,
                              high=drift.theta_high, max_replay=drift.max_replay)


class Channels:
    """One insecure channel per address, opened on first use (gRPC reconnects by itself)."""

    def __init__(self) -> None:
        self._channels: dict[str, Any] = {}
        self._lock = threading.Lock()

    def get(self, address: str) -> Any:
        import grpc

        with self._lock:
            if address not in self._channels:
                self._channels[address] = grpc.insecure_channel(address)
            return self._channels[address]

    def close(self) -> None:
        with self._lock:
            for channel in self._channels.values():
                channel.close()
            self._channels.clear()


class GrpcServices:
    """`TransferServices` over gRPC: one address per service (see `OperatorSettings`)."""

    def __init__(self, addresses: dict[Service, str], timeout_s: float, channels: Channels | None = None) -> None:
        self.addresses, self.timeout_s = addresses, timeout_s
        self._channels = channels or Channels()

    def _call(self, service: Service, module: str, stub: str, method: str, request: Any) -> Any:
        import grpc

        stub_instance = getattr(_proto(module), stub)(self._channels.get(self.addresses[service]))
        try:
            return getattr(stub_instance, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _error(service, exc) from exc

    def _start(self, service: Service, module: str, stub: str, method: str, request: Any) -> Operation:
        return operation_from_message(self._call(service, module, stub, method, request).operation)

    def start_projection(self, request: ProjectionRequest) -> Operation:
        pb = _proto("projector_pb2")
        message = pb.StartProjectionRequest(teacher=_checkpoint_message(request.teacher),
                                            student_name=request.student_name, width=request.width,
                                            seed=request.seed, request_id=request.request_id)
        return self._start(Service.PROJECTOR, "projector_pb2_grpc", "ProjectorServiceStub", "StartProjection",
                           message)

    def start_sampling(self, request: SamplingRequest) -> Operation:
        pb = _proto("sampler_pb2")
        config = pb.SamplingConfig(ratio=request.ratio, positive_ratio=request.positive_ratio,
                                   temporal_blocks=request.temporal_blocks, unclicked_ratio=request.unclicked_ratio,
                                   seed=request.seed)
        message = pb.StartSamplingRequest(dataset=_dataset_message(request.dataset),
                                          teacher=_checkpoint_message(request.teacher), config=config,
                                          sample_name=request.sample_name, request_id=request.request_id)
        return self._start(Service.SAMPLER, "sampler_pb2_grpc", "SamplerServiceStub", "StartSampling", message)

    def start_distillation(self, request: DistillationRequest) -> Operation:
        pb = _proto("offline_distiller_pb2")
        config = pb.DistillationConfig(kd_weight=request.kd_weight, temperature=request.temperature,
                                       frozen_epochs=request.frozen_epochs, joint_epochs=request.joint_epochs,
                                       seed=request.seed, task_logit_shift=request.task_logit_shift,
                                       **(request.optim.fields() if request.optim else {}),
                                       **_kd_gate(request.kd_gate),
                                       **_unless_unset("reuse_teacher_network", request.reuse_teacher_network, True))
        model = pb.ModelSpec(architecture=request.student_model.architecture,
                             embedding_dim=request.student_model.embedding_dim,
                             hidden=list(request.student_model.hidden))
        message = pb.StartDistillationRequest(student=_checkpoint_message(request.student),
                                              teacher=_checkpoint_message(request.teacher),
                                              sample=_dataset_message(request.sample), config=config,
                                              student_name=request.student_name, request_id=request.request_id,
                                              student_model=model)
        return self._start(Service.OFFLINE_DISTILLER, "offline_distiller_pb2_grpc", "OfflineDistillerServiceStub",
                           "StartDistillation", message)

    def compute_drift(self, request: DriftRequest) -> Operation:
        pb = _proto("drift_detector_pb2")
        message = pb.ComputeDriftRequest(reference=_dataset_message(request.reference),
                                         stream=_dataset_message(request.stream),
                                         config=_drift_config(pb, request.drift), request_id=request.request_id)
        return self._start(Service.DRIFT_DETECTOR, "drift_detector_pb2_grpc", "DriftDetectorServiceStub",
                           "ComputeDrift", message)

    def start_codistillation(self, request: CoDistillationRequest) -> Operation:
        pb = _proto("online_codistiller_pb2")
        drift, collaborative = request.drift, request.collaborative
        config = pb.CoDistillationConfig(
            teacher_update_interval=request.teacher_update_interval, kd_weight=request.kd_weight,
            temperature=request.temperature, seed=request.seed, **(request.optim.fields() if request.optim else {}),
            drift=pb.CoDistillationDriftSettings(metric=drift.metric, windows=drift.windows, bins=drift.bins,
                                                 low=drift.theta_low, high=drift.theta_high,
                                                 max_replay=drift.max_replay, **_rolling(drift)),
            **_kd_gate(request.kd_gate))
        if collaborative is not None:
            # Every field set (the spec's values, defaulted as the core's), as `switch --services` sends it;
            # the message's presence alone is what makes the teacher collaborative.
            config.collaborative.CopyFrom(pb.CollaborativeCoDistillation(
                weight=collaborative.weight, temperature=collaborative.temperature, gate=collaborative.gate,
                scale_by_t2=collaborative.scale_by_t2))
        message = pb.StartCoDistillationRequest(student=_checkpoint_message(request.student),
                                                teacher=_checkpoint_message(request.teacher),
                                                stream=_dataset_message(request.stream),
                                                replay=_dataset_message(request.replay), config=config,
                                                student_name=request.student_name, teacher_name=request.teacher_name,
                                                request_id=request.request_id, follow=False)
        return self._start(Service.ONLINE_CODISTILLER, "online_codistiller_pb2_grpc", "OnlineCoDistillerServiceStub",
                           "StartCoDistillation", message)

    def _operations(self, service: Service, method: str, operation_id: str) -> Operation:
        pb = _proto("operations_pb2")
        request_cls = {"GetOperation": pb.GetOperationRequest, "CancelOperation": pb.CancelOperationRequest}[method]
        response = self._call(service, "operations_pb2_grpc", "OperationsServiceStub", method,
                              request_cls(operation_id=operation_id))
        return operation_from_message(response.operation)

    def get_operation(self, service: Service, operation_id: str) -> Operation:
        return self._operations(service, "GetOperation", operation_id)

    def cancel_operation(self, service: Service, operation_id: str) -> Operation:
        return self._operations(service, "CancelOperation", operation_id)


def _interval(message: Any, name: str) -> Interval:
    if not message.HasField(name):
        return UNKNOWN
    value = getattr(message, name)
    if value.level == 0 and value.lower == 0 and value.upper == 0:
        return UNKNOWN  # an unset interval: proto3 zeros, not a measured [0, 0]
    return Interval(value.estimate, value.lower, value.upper, value.level)


class GrpcPredictor:
    """`PredictorAdmin` over the predictor's admin gRPC API (`PredictorAdminService`)."""

    def __init__(self, address: str, timeout_s: float, channels: Channels | None = None) -> None:
        self.address, self.timeout_s = address, timeout_s
        self._channels = channels or Channels()

    def _call(self, method: str, request: Any) -> Any:
        import grpc

        stub = _proto("predictor_pb2_grpc").PredictorAdminServiceStub(self._channels.get(self.address))
        try:
            return getattr(stub, method)(request, timeout=self.timeout_s)
        except grpc.RpcError as exc:
            raise _error(Service.PREDICTOR, exc) from exc

    def set_split(self, split: Split) -> Split:
        pb = _proto("predictor_pb2")
        self._call("SetSplit", pb.SetSplitRequest(split=pb.Split(student_weight=split.student_weight,
                                                                  salt=split.salt)))
        return split

    def get_split(self) -> Split:
        response = self._call("GetSplit", _proto("predictor_pb2").GetSplitRequest())
        return Split(response.split.student_weight, response.split.salt)

    def swap_arm(self, arm: Arm, checkpoint: CheckpointRef) -> None:
        pb = _proto("predictor_pb2")
        wire_arm = pb.ARM_TEACHER if arm is Arm.TEACHER else pb.ARM_STUDENT
        self._call("SwapArm", pb.SwapArmRequest(arm=wire_arm, checkpoint=_checkpoint_message(checkpoint)))

    def arm_metrics(self, window_seconds: float) -> ArmMetrics:
        pb = _proto("predictor_pb2")
        response = self._call("GetArmMetrics", pb.GetArmMetricsRequest(window_seconds=window_seconds))

        def arm_checkpoint(name: str) -> CheckpointRef | None:
            if not response.HasField(name) or not getattr(response, name).HasField("checkpoint"):
                return None
            ref = getattr(response, name).checkpoint
            return CheckpointRef(ref.name, ref.version) if ref.name else None  # an empty arm

        paired = PairedMetrics(
            paired_rows=int(response.paired_rows),
            delta_auc=_interval(response, "delta_auc"),
            delta_logloss=_interval(response, "delta_logloss"),
            student_pcoc=_interval(response, "student_pcoc"),
            teacher_pcoc=_interval(response, "teacher_pcoc"),
        )
        split = Split(response.split.student_weight, response.split.salt) if response.HasField("split") else None
        return ArmMetrics(paired, split, arm_checkpoint("teacher"), arm_checkpoint("student"))


def finite_or_none(value: float | None) -> float | None:
    """JSON (and so the Kubernetes API) has no NaN or infinity: unknown figures are left out."""
    return value if value is not None and math.isfinite(value) else None
