"""One small function per phase: look at what the services report, call what is needed, move on.

Each function takes a `Tick` — the switch's parsed spec, a copy of its status being edited, the
clients and the time — and edits the status; the reconciler writes the difference back. Nothing is
kept between ticks except what lands in status, so any tick may run in a freshly started operator.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from operators.modelswitch import builders
from operators.modelswitch.clients import (
    Arm,
    CheckpointRef,
    Clients,
    Operation,
    OperationState,
    Service,
    ServiceError,
    ServiceRejected,
)
from operators.modelswitch.crd import ROLLOUT_PHASES, TRAINING_PHASES, Phase
from operators.modelswitch.decisions import (
    GateDecision,
    Interval,
    Position,
    Verdict,
    evaluate_gates,
    next_position,
    with_timeout,
)
from operators.modelswitch.models import (
    CheckpointStatus,
    DatasetStatus,
    GateStatus,
    HistoryEntry,
    IntervalStatus,
    ModelSwitchSpec,
    ModelSwitchStatus,
    OperationStatus,
    RolloutStatus,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """A Kubernetes event to post on the switch."""

    type: str  # Normal or Warning
    reason: str
    message: str


@dataclass
class Tick:
    """One reconcile pass over one switch."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: ModelSwitchSpec
    status: ModelSwitchStatus
    clients: Clients
    now: datetime
    #: Other switches ("namespace/name") that hold the predictor's arms right now.
    predictor_owners: frozenset[str] = frozenset()
    events: list[Event] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def prefix(self) -> str:
        return builders.artifact_prefix(self.namespace, self.name, self.spec)

    def request_id(self, stage: str) -> str:
        return builders.request_id(self.namespace, self.name, self.uid, stage, self.status.attempt or 0)

    def split(self, percent: int) -> builders.Split:
        return builders.student_split(percent, self.namespace, self.name, self.uid)

    def event(self, reason: str, message: str, *, warning: bool = False) -> None:
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def enter(self, phase: Phase, reason: str, message: str, *, warning: bool = False) -> None:
        """Move to `phase` (or record a step within it): status, conditions, history and an event."""
        status = self.status
        if status.phase != phase:
            status.phase_started_at = builders.timestamp(self.now)
        status.phase, status.reason, status.message = phase, reason, message
        complete = bool(status.rollout.promotion_complete)
        for kind, value in builders.phase_conditions(phase, complete).items():
            status.conditions = builders.set_condition(status.conditions, kind, value, reason, message, self.now,
                                                       self.generation)
        status.history = builders.with_history(status.history, HistoryEntry(
            time=builders.timestamp(self.now), phase=phase, student_percent=status.student_percent, reason=reason,
            message=message))
        self.event(reason, f"{phase.value}: {message}", warning=warning)

    def fail(self, reason: str, message: str) -> None:
        """Stop in Failed; a retry resumes the phase that failed."""
        self.status.resume_phase = serving_phase(self.status)
        self.enter(Phase.FAILED, reason, message, warning=True)


# -------------------------------------------------------------------------------------------- stages


@dataclass(frozen=True)
class Stage:
    """A long-running operation of one service, started once per attempt and followed until it ends."""

    key: str  # field of status.operations
    service: Service
    start: Callable[[Tick], Operation]


def _checkpoint(tick: Tick, stage: Stage, operation: Operation) -> CheckpointStatus | None:
    """The checkpoint an operation published; fails the switch if it reports none."""
    if operation.checkpoint is None:
        tick.fail(f"{_camel(stage.key)}NoResult",
                  f"{stage.service.value} operation {operation.id} succeeded without a checkpoint")
        return None
    return CheckpointStatus(name=operation.checkpoint.name, version=operation.checkpoint.version)


PROJECTION = Stage("projection", Service.PROJECTOR, lambda t: t.clients.services.start_projection(
    builders.projection_request(t.spec, t.prefix, t.request_id("projection"))))
SAMPLING = Stage("sampling", Service.SAMPLER, lambda t: t.clients.services.start_sampling(
    builders.sampling_request(t.spec, t.prefix, t.request_id("sampling"))))
OFFLINE_DISTILLATION = Stage("offline_distillation", Service.OFFLINE_DISTILLER,
                             lambda t: t.clients.services.start_distillation(builders.distillation_request(
                                 t.spec, t.prefix, builders.checkpoint_ref(t.status.artifacts.projected_student),
                                 t.status.artifacts.sample.name, t.request_id("offline-distillation"),
                                 task_logit_shift=builders.prior_shift(t.status.artifacts.sample))))
DRIFT = Stage("drift", Service.DRIFT_DETECTOR, lambda t: t.clients.services.compute_drift(
    builders.drift_request(t.spec, t.request_id("drift"))))
ONLINE_CODISTILLATION = Stage("online_co_distillation", Service.ONLINE_CODISTILLER,
                              lambda t: t.clients.services.start_codistillation(builders.codistillation_request(
                                  t.spec, t.prefix, builders.checkpoint_ref(t.status.artifacts.offline_student),
                                  t.request_id("online-codistillation"))))
STAGES = (PROJECTION, SAMPLING, OFFLINE_DISTILLATION, DRIFT, ONLINE_CODISTILLATION)


def _record(tick: Tick, stage: Stage, operation: Operation, started_at: str | None) -> None:
    message = f"{operation.error_code}: {operation.error_message}" if operation.error_code else None
    setattr(tick.status.operations, stage.key, OperationStatus(
        id=operation.id, state=operation.state.value, progress=max(0.0, min(1.0, operation.progress)),
        stage=operation.stage or None, message=message, started_at=started_at))


def run_stage(tick: Tick, stage: Stage) -> Operation | None:
    """Start the stage's operation (once) or poll it; the operation once it succeeded, else None.

    A failed or cancelled operation fails the switch. Transient errors propagate to the reconciler,
    which holds the phase and tries again next tick."""
    known = getattr(tick.status.operations, stage.key)
    if known is None or not known.id:
        try:
            operation = stage.start(tick)
        except ServiceRejected as exc:
            tick.fail(f"{_camel(stage.key)}Rejected", str(exc))
            return None
        started_at = builders.timestamp(tick.now)
        tick.event("OperationStarted", f"{stage.service.value} operation {operation.id} for {_camel(stage.key)}")
    else:
        operation = tick.clients.services.get_operation(stage.service, known.id)
        started_at = known.started_at
    _record(tick, stage, operation, started_at)
    if operation.state is OperationState.SUCCEEDED:
        return operation
    if operation.state in (OperationState.FAILED, OperationState.CANCELLED):
        tick.fail(f"{_camel(stage.key)}{operation.state.value}",
                  f"{stage.service.value} operation {operation.id}: "
                  f"{operation.error_code or operation.state.value}: {operation.error_message}".rstrip(": "))
    return None


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head[0].upper() + head[1:] + "".join(part.title() for part in rest)


# ------------------------------------------------------------------------------------ training phases


def pending(tick: Tick) -> None:
    tick.status.artifacts.teacher = CheckpointStatus(name=tick.spec.teacher.checkpoint,
                                                     version=tick.spec.teacher.version)
    tick.status.attempt = tick.status.attempt or 0
    tick.status.student_percent = 0
    tick.enter(Phase.PROJECTING, "Started",
               f"projecting {tick.spec.teacher.checkpoint}'s embeddings to width {tick.spec.student.embedding_dim}")


def projecting(tick: Tick) -> None:
    if (operation := run_stage(tick, PROJECTION)) and (projected := _checkpoint(tick, PROJECTION, operation)):
        tick.status.artifacts.projected_student = projected
        tick.enter(Phase.SAMPLING, "ProjectionSucceeded",
                   f"projected student {projected.name}@{projected.version}; sampling {tick.spec.data.train}")


def sampling(tick: Tick) -> None:
    if operation := run_stage(tick, SAMPLING):
        sample = operation.dataset or operation.details.get("dataset")
        if not sample:
            tick.fail("SamplingNoResult", f"sampler operation {operation.id} succeeded without a dataset")
            return
        rates = {key: operation.details.get(key) for key in ("positive_rate", "source_positive_rate")}
        tick.status.artifacts.sample = DatasetStatus(
            name=sample, **{key: float(value) for key, value in rates.items() if isinstance(value, (int, float))})
        tick.enter(Phase.OFFLINE_DISTILLING, "SamplingSucceeded", f"sample {sample}; distilling offline")


def offline_distilling(tick: Tick) -> None:
    operation = run_stage(tick, OFFLINE_DISTILLATION)
    if operation and (student := _checkpoint(tick, OFFLINE_DISTILLATION, operation)):
        tick.status.artifacts.offline_student = student
        if tick.spec.online.enabled:
            tick.enter(Phase.ONLINE_CODISTILLING, "OfflineDistillationSucceeded",
                       f"offline student {student.name}@{student.version}; co-distilling on {tick.spec.data.stream}")
        else:
            tick.status.artifacts.student = tick.status.artifacts.offline_student
            tick.enter(Phase.SHADOW, "OfflineDistillationSucceeded",
                       "online stage disabled: shadowing the offline student")


def online_codistilling(tick: Tick) -> None:
    drift_state = tick.status.operations.drift
    if drift_state is None or drift_state.state != OperationState.SUCCEEDED.value:
        operation = run_stage(tick, DRIFT)
        if operation is None:
            return
        tick.status.drift = builders.drift_figures(operation.details) or None
    operation = run_stage(tick, ONLINE_CODISTILLATION)
    if operation and (student := _checkpoint(tick, ONLINE_CODISTILLATION, operation)):
        tick.status.artifacts.student = student
        tick.status.artifacts.online_teacher = _reported_checkpoint(operation.details.get("teacher"))
        tick.enter(Phase.SHADOW, "OnlineCoDistillationSucceeded",
                   f"student {student.name}@{student.version}; shadow scoring next")


def _reported_checkpoint(value: object) -> CheckpointStatus | None:
    """A checkpoint an operation names in its details: "name/v000007" or {"name": ..., "version": ...}."""
    if isinstance(value, dict) and value.get("name"):
        return CheckpointStatus(name=str(value["name"]), version=str(value.get("version") or ""))
    if isinstance(value, str) and value:
        name, _, version = value.rpartition("/")
        if name and re.fullmatch(r"v\d{6}", version):
            return CheckpointStatus(name=name, version=version)
        return CheckpointStatus(name=value)
    return None


# ------------------------------------------------------------------------------------- rollout phases


def _same_checkpoint(seen: CheckpointRef | None, wanted: CheckpointStatus) -> bool:
    if seen is None:
        return True  # the predictor does not say: nothing to correct
    return seen.name == wanted.name and (not wanted.version or not seen.version or seen.version == wanted.version)


def acquire_predictor(tick: Tick) -> bool:
    """Put the student on the student arm at 0% (shadow scoring only); True once the arms are ours."""
    rollout = tick.status.rollout
    if rollout.student_arm_ready:
        return True
    others = sorted(tick.predictor_owners - {tick.key})
    if others:
        if tick.status.reason != "PredictorBusy":
            tick.status.reason = "PredictorBusy"
            tick.status.message = f"waiting for {', '.join(others)} to hand back the predictor"
            tick.event("PredictorBusy", tick.status.message)
        return False
    serving = tick.clients.predictor.arm_metrics(1.0).teacher_checkpoint
    teacher = tick.status.artifacts.teacher
    if teacher is not None and not _same_checkpoint(serving, teacher):
        # Gates compare against whatever the teacher arm serves, and a rollback returns traffic to it:
        # both are only right when it is this switch's teacher.
        if tick.status.reason != "TeacherNotServing":
            tick.status.reason = "TeacherNotServing"
            tick.status.message = (f"the predictor's teacher arm serves {serving.name}@{serving.version}, not "
                                   f"spec.teacher {teacher.name}@{teacher.version or 'latest'}")
            tick.event("TeacherNotServing", tick.status.message, warning=True)
        return False
    student = builders.checkpoint_ref(tick.status.artifacts.student)
    rollout.owns_predictor = True  # before the calls: a crash between them still owes a restore
    tick.clients.predictor.swap_arm(Arm.STUDENT, student)
    tick.clients.predictor.set_split(tick.split(0))
    rollout.student_arm_ready, rollout.teacher_restored = True, False
    tick.status.student_percent, tick.status.step = 0, None
    tick.status.step_started_at = builders.timestamp(tick.now)
    tick.status.reason, tick.status.message = "ShadowScoring", f"student {student.name} shadow-scores live traffic"
    tick.event("StudentArmReady", f"predictor serves the teacher; the student {student.name}@{student.version} "
                                  "scores the same requests in shadow")
    return False


def _interval_status(interval: Interval) -> IntervalStatus | None:
    from operators.modelswitch.clients import finite_or_none

    status = IntervalStatus(estimate=finite_or_none(interval.estimate), lower=finite_or_none(interval.lower),
                            upper=finite_or_none(interval.upper), level=finite_or_none(interval.level))
    figures = (status.estimate, status.lower, status.upper)
    return status if any(value is not None for value in figures) else None


def check_gates(tick: Tick) -> GateDecision:
    """Read the window's paired metrics, keep the predictor as this step wants it, and decide."""
    status, spec = tick.status, tick.spec
    started = builders.parse_timestamp(status.step_started_at) or tick.now
    held = max(0.0, (tick.now - started).total_seconds())
    window = max(1.0, held)
    metrics = tick.clients.predictor.arm_metrics(window)
    wanted_percent = status.student_percent or 0
    student = status.artifacts.student
    if not _same_checkpoint(metrics.student_checkpoint, student):
        tick.clients.predictor.swap_arm(Arm.STUDENT, builders.checkpoint_ref(student))
        tick.event("StudentArmRestored", f"the student arm served {metrics.student_checkpoint}; set back to "
                                         f"{student.name}@{student.version}", warning=True)
        decision = GateDecision(Verdict.HOLD, "StudentArmRestored", "the window scored another student model")
        status.step_started_at = builders.timestamp(tick.now)  # its rows do not count
    else:
        decision = evaluate_gates(metrics.paired, spec.rollout.gates)
    timeout = (spec.rollout.timeouts.shadow_seconds if status.phase is Phase.SHADOW
               else spec.rollout.timeouts.step_seconds)
    decision = with_timeout(decision, held, timeout)
    drifted = metrics.split is not None and abs(metrics.split.student_weight - wanted_percent / 100.0) > 1e-9
    if drifted and decision.verdict is not Verdict.ROLL_BACK:  # a roll back sets the split anyway
        tick.clients.predictor.set_split(tick.split(wanted_percent))
        tick.event("SplitRestored", f"predictor split was {metrics.split.student_weight:.4f}; set back to "
                                    f"{wanted_percent}%", warning=True)
    paired = metrics.paired
    status.gate = GateStatus(decision=decision.verdict.value, reason=decision.reason, message=decision.message,
                             checked_at=builders.timestamp(tick.now), window_seconds=window,
                             paired_rows=paired.paired_rows, delta_auc=_interval_status(paired.delta_auc),
                             delta_log_loss=_interval_status(paired.delta_logloss),
                             student_pcoc=_interval_status(paired.student_pcoc),
                             teacher_pcoc=_interval_status(paired.teacher_pcoc))
    return decision


def advance(tick: Tick, decision: GateDecision) -> None:
    """Apply a gate decision to the traffic ladder."""
    status, rollout = tick.status, tick.spec.rollout
    here = Position(status.phase, status.step, status.student_percent or 0)
    there = next_position(here, decision.verdict, rollout.steps, rollout.auto_promote)
    if there.phase is Phase.ROLLED_BACK:
        roll_back(tick, decision.reason, decision.message)
    elif there.phase is Phase.PROMOTED:
        promote(tick, "Promoted", f"last step passed: {decision.message}")
    elif there != here:
        tick.clients.predictor.set_split(tick.split(there.percent))
        status.step, status.student_percent = there.step, there.percent
        status.step_started_at = builders.timestamp(tick.now)
        status.gate = None
        tick.enter(Phase.CANARY, "StepAdvanced",
                   f"step {there.step + 1}/{len(rollout.steps)}: {there.percent}% of traffic on the student "
                   f"({decision.message})")
    elif decision.verdict is Verdict.ADVANCE:
        status.reason, status.message = "AwaitingPromotion", f"all steps passed; promote with " \
                                                             f"crossadapt.io/action=promote ({decision.message})"
    else:
        status.reason, status.message = decision.reason, decision.message


def shadow(tick: Tick) -> None:
    if acquire_predictor(tick):
        advance(tick, check_gates(tick))


def canary(tick: Tick) -> None:
    advance(tick, check_gates(tick))


# -------------------------------------------------------------------------------- ends of a rollout


def roll_back(tick: Tick, reason: str, message: str) -> None:
    """Everything back on the teacher now (in this tick), then RolledBack; a retry starts at Shadow."""
    status = tick.status
    status.resume_phase = Phase.SHADOW if status.artifacts.student else serving_phase(status)
    status.rollout.teacher_restored = False
    status.student_percent = 0
    tick.enter(Phase.ROLLED_BACK, reason, message, warning=True)
    try:
        restore_teacher(tick)
    except ServiceError as exc:
        tick.event("RestoreDelayed", f"teacher not restored yet, retrying next tick: {exc}", warning=True)


def restore_teacher(tick: Tick) -> None:
    """The teacher serves 100% (and is back on the teacher arm if a promotion moved it)."""
    rollout = tick.status.rollout
    if rollout.previous_teacher is not None:
        tick.clients.predictor.swap_arm(Arm.TEACHER, builders.checkpoint_ref(rollout.previous_teacher))
    if rollout.owns_predictor or rollout.previous_teacher is not None:
        tick.clients.predictor.set_split(tick.split(0))
        tick.event("TeacherRestored", "the teacher serves 100% of traffic")
    tick.status.rollout = RolloutStatus(teacher_restored=True)
    tick.status.student_percent = 0


def promote(tick: Tick, reason: str, message: str) -> None:
    """The student becomes the serving model; the old teacher is kept for a rollback."""
    status = tick.status
    status.rollout.serving_model = status.artifacts.student
    status.rollout.previous_teacher = status.artifacts.teacher
    status.rollout.promotion_complete = False
    status.student_percent = 100
    tick.enter(Phase.PROMOTED, reason, message)
    try:
        complete_promotion(tick)
    except ServiceError as exc:
        tick.event("PromotionDelayed", f"promotion not complete yet, retrying next tick: {exc}", warning=True)


def complete_promotion(tick: Tick) -> None:
    """Put the student on the teacher arm (the arm that serves by default) and all traffic there.

    Order matters: while the student arm still takes 100% the teacher arm is swapped, so no request
    is ever served by the old teacher again after the switch to 100%."""
    rollout = tick.status.rollout
    student = builders.checkpoint_ref(rollout.serving_model)
    tick.clients.predictor.swap_arm(Arm.TEACHER, student)
    tick.clients.predictor.set_split(tick.split(0))
    rollout.promotion_complete, rollout.owns_predictor = True, False
    rollout.student_arm_ready = rollout.teacher_restored = None
    for kind, value in builders.phase_conditions(Phase.PROMOTED, True).items():
        tick.status.conditions = builders.set_condition(tick.status.conditions, kind, value, "Promoted",
                                                        f"{student.name}@{student.version} serves all traffic",
                                                        tick.now, tick.generation)
    tick.event("PromotionComplete", f"{student.name}@{student.version} is the serving model; "
                                    f"{rollout.previous_teacher.name}@{rollout.previous_teacher.version} kept "
                                    "for a rollback")


def promoted(tick: Tick) -> None:
    if not tick.status.rollout.promotion_complete:
        complete_promotion(tick)


def rolled_back(tick: Tick) -> None:
    if not tick.status.rollout.teacher_restored:
        restore_teacher(tick)


def failed(tick: Tick) -> None:
    """Nothing to do until a person asks for a retry (or fixes an invalid spec)."""


PHASE_HANDLERS: dict[Phase, Callable[[Tick], None]] = {
    Phase.PENDING: pending,
    Phase.PROJECTING: projecting,
    Phase.SAMPLING: sampling,
    Phase.OFFLINE_DISTILLING: offline_distilling,
    Phase.ONLINE_CODISTILLING: online_codistilling,
    Phase.SHADOW: shadow,
    Phase.CANARY: canary,
    Phase.PROMOTED: promoted,
    Phase.ROLLED_BACK: rolled_back,
    Phase.FAILED: failed,
}


def serving_phase(status: ModelSwitchStatus) -> Phase | None:
    """The phase that decides what an action means: the one paused in, if paused."""
    return status.resume_phase if status.phase is Phase.PAUSED else status.phase


def is_training(phase: Phase | None) -> bool:
    return phase is Phase.PENDING or phase in TRAINING_PHASES


def is_rolling_out(phase: Phase | None) -> bool:
    return phase in ROLLOUT_PHASES
