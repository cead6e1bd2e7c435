"""In-memory services and predictor implementing the operator's Protocols (`operators.modelswitch.clients`).

The backends (`ServiceBackend`, `PredictorBackend`) hold the state a real service would; the client
objects the operator gets are thin views of them, so a "restarted operator" with new clients sees
the same operations — exactly what a real restart sees. Everything is guarded by a lock: kopf runs
sync handlers in threads while the test reads the state from the event loop.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from operators.modelswitch.clients import (
    Arm,
    ArmMetrics,
    CheckpointRef,
    Clients,
    CoDistillationRequest,
    DistillationRequest,
    DriftRequest,
    Operation,
    OperationState,
    ProjectionRequest,
    SamplingRequest,
    Service,
    ServiceRejected,
    ServiceUnavailable,
    Split,
)
from operators.modelswitch.decisions import Interval, PairedMetrics

GOOD = PairedMetrics(paired_rows=200_000, delta_auc=Interval(0.002, 0.0005, 0.0035),
                     delta_logloss=Interval(-0.003, -0.004, -0.001), student_pcoc=Interval(1.0, 0.99, 1.01),
                     teacher_pcoc=Interval(1.0, 0.99, 1.01))
BROKEN = PairedMetrics(paired_rows=5_000, delta_auc=Interval(-0.12, -0.14, -0.10),
                       delta_logloss=Interval(0.08, 0.07, 0.09), student_pcoc=Interval(1.6, 1.5, 1.7))
FEW_LABELS = PairedMetrics(paired_rows=10, delta_auc=Interval(0.0, -0.3, 0.3),
                           delta_logloss=Interval(0.0, -0.2, 0.2), student_pcoc=Interval(1.0, 0.5, 1.5))


@dataclass
class _Op:
    operation: Operation
    polls_left: int
    result: Operation


@dataclass
class ServiceBackend:
    """Operations of every service; each finishes after `polls` GetOperation calls."""

    polls: int = 2
    #: stage kind → (code, message): the operation of that kind fails instead of succeeding.
    failures: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: services that answer UNAVAILABLE.
    down: set[Service] = field(default_factory=set)
    #: kinds whose operations stay RUNNING while listed here (a long training run).
    held: set[str] = field(default_factory=set)
    starts: list[tuple[str, object]] = field(default_factory=list)
    cancels: list[str] = field(default_factory=list)
    ops: dict[str, _Op] = field(default_factory=dict)
    by_request: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def starts_of(self, kind: str) -> list[object]:
        with self.lock:
            return [request for started, request in self.starts if started == kind]

    def start(self, service: Service, kind: str, request: object, request_id: str, success: Operation) -> Operation:
        with self.lock:
            if service in self.down:
                raise ServiceUnavailable(service, "UNAVAILABLE", "connection refused")
            self.starts.append((kind, request))
            if request_id in self.by_request:  # idempotent start, as the real services do
                return self.ops[self.by_request[request_id]].operation
            op_id = f"{kind[:4]}-{next(self.ids):04d}"
            self.by_request[request_id] = op_id
            if kind in self.failures:
                code, message = self.failures[kind]
                result = Operation(op_id, OperationState.FAILED, 0.4, "train", code, message)
            else:
                result = Operation(op_id, OperationState.SUCCEEDED, 1.0, "publish", checkpoint=success.checkpoint,
                                   dataset=success.dataset, details=success.details)
            operation = Operation(op_id, OperationState.PENDING, 0.0, "queued")
            self.ops[op_id] = _Op(operation, self.polls, result)
            return operation

    def get(self, service: Service, op_id: str) -> Operation:
        with self.lock:
            if service in self.down:
                raise ServiceUnavailable(service, "UNAVAILABLE", "connection refused")
            if op_id not in self.ops:
                raise ServiceRejected(service, "NOT_FOUND", f"no operation {op_id}")
            op = self.ops[op_id]
            if op.operation.state.terminal:
                return op.operation
            if any(op_id.startswith(kind[:4]) for kind in self.held):
                op.operation = Operation(op_id, OperationState.RUNNING, 0.3, "train")
                return op.operation
            op.polls_left -= 1
            if op.polls_left <= 0:
                op.operation = op.result
            else:
                op.operation = Operation(op_id, OperationState.RUNNING, 0.5, "train")
            return op.operation

    def cancel(self, service: Service, op_id: str) -> Operation:
        with self.lock:
            self.cancels.append(op_id)
            op = self.ops[op_id]
            if not op.operation.state.terminal:
                op.operation = Operation(op_id, OperationState.CANCELLED, op.operation.progress, "cancelled",
                                         "CANCELLED", "cancelled by the caller")
            return op.operation


class FakeServices:
    """`TransferServices` over a `ServiceBackend`."""

    def __init__(self, backend: ServiceBackend) -> None:
        self.backend = backend

    def start_projection(self, request: ProjectionRequest) -> Operation:
        result = Operation("", OperationState.SUCCEEDED, checkpoint=CheckpointRef(request.student_name, "v000001"))
        return self.backend.start(Service.PROJECTOR, "projection", request, request.request_id, result)

    def start_sampling(self, request: SamplingRequest) -> Operation:
        result = Operation("", OperationState.SUCCEEDED, dataset=request.sample_name,
                           details={"rows": 1200, "positive_rate": 0.5, "source_positive_rate": 0.2})
        return self.backend.start(Service.SAMPLER, "sampling", request, request.request_id, result)

    def start_distillation(self, request: DistillationRequest) -> Operation:
        result = Operation("", OperationState.SUCCEEDED, checkpoint=CheckpointRef(request.student_name, "v000001"))
        return self.backend.start(Service.OFFLINE_DISTILLER, "distillation", request, request.request_id, result)

    def compute_drift(self, request: DriftRequest) -> Operation:
        result = Operation("", OperationState.SUCCEEDED, details={"replay_ratio": 0.07,
                                                                   "divergence": {"mean": 0.021, "max": 0.09}})
        return self.backend.start(Service.DRIFT_DETECTOR, "drift", request, request.request_id, result)

    def start_codistillation(self, request: CoDistillationRequest) -> Operation:
        result = Operation("", OperationState.SUCCEEDED, checkpoint=CheckpointRef(request.student_name, "v000002"),
                           details={"teacher": f"{request.teacher_name}/v000001", "batches": 240})
        return self.backend.start(Service.ONLINE_CODISTILLER, "codistillation", request, request.request_id, result)

    def get_operation(self, service: Service, operation_id: str) -> Operation:
        return self.backend.get(service, operation_id)

    def cancel_operation(self, service: Service, operation_id: str) -> Operation:
        return self.backend.cancel(service, operation_id)


@dataclass
class PredictorBackend:
    """Two arms, a split, and the paired metrics a test scripts (`metrics(backend)`)."""

    teacher: CheckpointRef = CheckpointRef("ctr/mlp-teacher", "v000003")
    student: CheckpointRef | None = None
    split: Split = Split(0.0, "")
    metrics: Callable[[PredictorBackend], PairedMetrics] = lambda backend: GOOD
    down: bool = False
    #: The next this-many SetSplit calls fail with UNAVAILABLE (a blip at the worst moment).
    failing_splits: int = 0
    #: Checkpoint names SwapArm refuses with NOT_FOUND.
    missing: set[str] = field(default_factory=set)
    #: Every call, in order: ("split", weight) / ("swap", arm, checkpoint name) / ("metrics", window).
    calls: list[tuple] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def weights(self) -> list[float]:
        with self.lock:
            return [call[1] for call in self.calls if call[0] == "split"]

    def _check(self) -> None:
        if self.down:
            raise ServiceUnavailable(Service.PREDICTOR, "UNAVAILABLE", "predictor unreachable")


class FakePredictor:
    """`PredictorAdmin` over a `PredictorBackend`."""

    def __init__(self, backend: PredictorBackend) -> None:
        self.backend = backend

    def set_split(self, split: Split) -> Split:
        with self.backend.lock:
            self.backend._check()
            if self.backend.failing_splits > 0:
                self.backend.failing_splits -= 1
                raise ServiceUnavailable(Service.PREDICTOR, "UNAVAILABLE", "predictor restarting")
            if not 0.0 <= split.student_weight <= 1.0 or math.isnan(split.student_weight):
                raise ServiceRejected(Service.PREDICTOR, "INVALID_ARGUMENT", f"weight {split.student_weight}")
            self.backend.split = split
            self.backend.calls.append(("split", split.student_weight))
            return split

    def get_split(self) -> Split:
        with self.backend.lock:
            self.backend._check()
            return self.backend.split

    def swap_arm(self, arm: Arm, checkpoint: CheckpointRef) -> None:
        with self.backend.lock:
            self.backend._check()
            if checkpoint.name in self.backend.missing:
                raise ServiceRejected(Service.PREDICTOR, "NOT_FOUND", f"no checkpoint {checkpoint.name}")
            if arm is Arm.TEACHER:
                self.backend.teacher = checkpoint
            else:
                self.backend.student = checkpoint
            self.backend.calls.append(("swap", arm.value, checkpoint.name))

    def arm_metrics(self, window_seconds: float) -> ArmMetrics:
        with self.backend.lock:
            self.backend._check()
            self.backend.calls.append(("metrics", window_seconds))
            paired = self.backend.metrics(self.backend)
            return ArmMetrics(paired, self.backend.split, self.backend.teacher, self.backend.student)


@dataclass
class Platform:
    """The fake world: services and a predictor; `clients()` is what one operator process gets."""

    services: ServiceBackend = field(default_factory=ServiceBackend)
    predictor: PredictorBackend = field(default_factory=PredictorBackend)

    def clients(self) -> Clients:
        return Clients(services=FakeServices(self.services), predictor=FakePredictor(self.predictor))
