"""One reconcile pass over a switch: read what is observed, act, and say what to write back.

Order within a pass: a new switch becomes Pending; a `crossadapt.io/action` annotation is handled
(and the pass ends there); `spec.paused` pauses or resumes; otherwise the phase's own transition
runs (`transitions.PHASE_HANDLERS`). A service that cannot be reached leaves the phase as it is and
the pass is repeated on the next tick; the `ServicesAvailable` condition says so meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from operators.modelswitch import builders
from operators.modelswitch.clients import Clients, OperationState, ServiceError, ServiceRejected, ServiceUnavailable
from operators.modelswitch.crd import FINAL_PHASES, ROLLOUT_PHASES, Action, Phase
from operators.modelswitch.models import (
    GateStatus,
    ModelSwitchSpec,
    ModelSwitchStatus,
    RolloutStatus,
    owned_status,
    read_status,
)
from operators.modelswitch.transitions import (
    PHASE_HANDLERS,
    STAGES,
    Event,
    Tick,
    is_rolling_out,
    is_training,
    promote,
    roll_back,
    serving_phase,
)


@dataclass(frozen=True)
class Observed:
    """What the operator sees of one switch."""

    name: str
    namespace: str
    uid: str
    generation: int | None
    spec: dict[str, Any]
    status: dict[str, Any]
    action: str | None
    now: datetime
    predictor_owners: frozenset[str] = frozenset()


@dataclass
class Outcome:
    status: dict[str, Any]  # the operator's status after the pass
    status_patch: dict[str, Any]  # the merge patch from the observed status to it
    events: list[Event] = field(default_factory=list)
    clear_action: bool = False


def reconcile(observed: Observed, clients: Clients) -> Outcome:
    before = read_status(observed.status)
    try:
        spec, problem = ModelSwitchSpec.model_validate(observed.spec), None
    except ValidationError as exc:
        spec, problem = None, _describe(exc)
    # With an invalid spec the tick carries none: only actions run then, and none of them reads it.
    tick = Tick(name=observed.name, namespace=observed.namespace, uid=observed.uid, generation=observed.generation,
                spec=spec, status=before.model_copy(deep=True),  # type: ignore[arg-type]
                clients=clients, now=observed.now, predictor_owners=observed.predictor_owners)
    handled = False
    try:
        handled = _step(tick, observed) if problem is None else _hold_invalid(tick, observed, problem)
        _set_condition(tick, "ServicesAvailable", True, "Reachable", "the services answered")
    except ServiceUnavailable as exc:
        handled = False  # the action is tried again with the pass
        if _condition(tick.status, "ServicesAvailable") != "False":
            tick.event("ServiceUnavailable", str(exc), warning=True)
        _set_condition(tick, "ServicesAvailable", False, exc.code, str(exc))
    except ServiceRejected as exc:
        _rejected(tick, exc)
    return _outcome(tick.status, observed, tick.events, handled)


def _step(tick: Tick, observed: Observed) -> bool:
    """One pass with a valid spec; True if it handled the action annotation."""
    status = tick.status
    _set_condition(tick, "SpecValid", True, "Valid", "the spec is usable")
    if status.phase is None:
        tick.enter(Phase.PENDING, "Accepted", "waiting to start")
        return False
    if _spec_was_invalid(status):  # the spec is valid again: carry on where it stopped
        target = status.resume_phase or Phase.PENDING
        status.resume_phase = None
        tick.enter(target, "SpecFixed", "the spec is valid again")
        return False
    if observed.action:
        handle_action(tick, observed.action)
        return True
    if not apply_pause(tick):
        PHASE_HANDLERS[status.phase](tick)
    return False


def _rejected(tick: Tick, exc: ServiceRejected) -> None:
    """A service refused a call the switch cannot do without (an operation it lost, a checkpoint the
    predictor cannot load): a rollout goes back to the teacher, anything else fails; retry starts over."""
    reason = f"{''.join(part.title() for part in exc.service.value.split('-'))}Rejected"
    if tick.status.phase in FINAL_PHASES:  # e.g. the teacher's restore refused: say so once, keep trying
        if tick.status.message != str(exc):
            tick.status.message = str(exc)
            tick.event(reason, str(exc), warning=True)
    elif tick.status.rollout.owns_predictor:
        roll_back(tick, reason, str(exc))
    else:
        tick.fail(reason, str(exc))


# ------------------------------------------------------------------------------------------- actions


def handle_action(tick: Tick, action: str) -> None:
    try:
        chosen = Action(action.strip().lower())
    except ValueError:
        tick.event("UnknownAction", f"crossadapt.io/action={action!r} is not one of "
                                    f"{', '.join(a.value for a in Action)}", warning=True)
        return
    {Action.PROMOTE: promote_action, Action.ABORT: abort_action, Action.RETRY: retry_action}[chosen](tick)


def promote_action(tick: Tick) -> None:
    phase = serving_phase(tick.status)
    if phase is Phase.CANARY or (phase is Phase.SHADOW and tick.status.rollout.student_arm_ready):
        tick.status.resume_phase = None
        promote(tick, "PromotedByUser", "promoted by crossadapt.io/action=promote")
    else:
        tick.event("PromoteIgnored", f"nothing to promote in phase {phase.value if phase else None}: the student "
                                     "must be shadow-scoring or in a canary step", warning=True)


def abort_action(tick: Tick) -> None:
    status = tick.status
    phase = serving_phase(status)
    if phase is Phase.PROMOTED:
        if status.rollout.promotion_complete and not _still_serving_ours(tick):
            tick.event("AbortIgnored", "another model serves on the teacher arm now; not rolling it back",
                       warning=True)
            return
        roll_back(tick, "Aborted", "promotion rolled back by crossadapt.io/action=abort")
    elif is_rolling_out(phase):
        roll_back(tick, "Aborted", "aborted by crossadapt.io/action=abort")
    elif is_training(phase):
        _cancel_running(tick)
        status.resume_phase = phase
        status.rollout = RolloutStatus(teacher_restored=True)
        tick.enter(Phase.ROLLED_BACK, "Aborted", f"aborted in {phase.value} by crossadapt.io/action=abort; "
                                                 "the teacher kept serving", warning=True)
    else:
        tick.event("AbortIgnored", f"nothing to abort in phase {phase.value if phase else None}")


def _still_serving_ours(tick: Tick) -> bool:
    serving = tick.clients.predictor.arm_metrics(1.0).teacher_checkpoint
    ours = tick.status.rollout.serving_model
    return serving is None or ours is None or (
        serving.name == ours.name and (not serving.version or not ours.version or serving.version == ours.version))


def _cancel_running(tick: Tick) -> None:
    for stage in STAGES:
        known = getattr(tick.status.operations, stage.key)
        if known is None or not known.id or known.state in ("Succeeded", "Failed", "Cancelled"):
            continue
        try:
            operation = tick.clients.services.cancel_operation(stage.service, known.id)
            known.state = operation.state.value
        except ServiceError as exc:  # best effort: the switch is aborted either way
            tick.event("CancelFailed", f"could not cancel {stage.service.value} operation {known.id}: {exc}",
                       warning=True)


def retry_action(tick: Tick) -> None:
    status = tick.status
    restored = status.phase is Phase.ROLLED_BACK and status.rollout.teacher_restored
    if status.phase is not Phase.FAILED and not restored:
        tick.event("RetryIgnored", f"nothing to retry in phase {status.phase.value}: only Failed or RolledBack "
                                   "switches (once the teacher serves again) start again", warning=True)
        return
    target = status.resume_phase or Phase.PENDING
    status.attempt = (status.attempt or 0) + 1
    status.resume_phase = None
    for stage in STAGES:  # unfinished operations start afresh under the new attempt's request ids
        known = getattr(status.operations, stage.key)
        if known is not None and known.state != OperationState.SUCCEEDED.value:
            setattr(status.operations, stage.key, None)
    if target in ROLLOUT_PHASES or target is Phase.PROMOTED:
        target = Phase.SHADOW
        status.rollout, status.step, status.gate, status.step_started_at = RolloutStatus(), None, None, None
        status.student_percent = 0
    tick.enter(target, "Retried", f"attempt {status.attempt}, from {target.value}")


# --------------------------------------------------------------------------------------------- pause


def apply_pause(tick: Tick) -> bool:
    """Pause or resume as spec.paused says; True if this pass should do nothing more."""
    status = tick.status
    if tick.spec.paused:
        if status.phase is Phase.PAUSED:
            return True
        if status.phase in FINAL_PHASES:
            return False
        status.resume_phase = status.phase
        tick.enter(Phase.PAUSED, "Paused", f"paused in {status.phase.value} with {status.student_percent or 0}% "
                                           "of traffic on the student (traffic stays as it is)")
        return True
    if status.phase is Phase.PAUSED:
        target = status.resume_phase or Phase.PENDING
        status.resume_phase = None
        if target in ROLLOUT_PHASES and status.rollout.student_arm_ready:
            status.step_started_at = builders.timestamp(tick.now)  # the gate window starts again
            status.gate = GateStatus()
        tick.enter(target, "Resumed", f"resumed in {target.value}")
        return True
    return False


# -------------------------------------------------------------------------------------- invalid specs


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"spec.{where}: {first['msg']}{more}"


def _hold_invalid(tick: Tick, observed: Observed, problem: str) -> bool:
    """A spec the CRD let through but the operator cannot use (e.g. no CEL on an old cluster).

    Before anything ran the switch fails with InvalidSpec (and resumes by itself once the spec is
    fixed); later it holds where it is — a rollout keeps its traffic — and says why. Actions still
    work (none of them needs the spec): an abort must never wait for a fix."""
    status = tick.status
    was_invalid = _condition(status, "SpecValid") == "False"
    _set_condition(tick, "SpecValid", False, "InvalidSpec", problem)
    if status.phase in (None, Phase.PENDING):
        status.resume_phase = Phase.PENDING
        tick.enter(Phase.FAILED, "InvalidSpec", problem, warning=True)
        return False
    if observed.action and not _spec_was_invalid(status):
        handle_action(tick, observed.action)
        return True
    if not was_invalid and not _spec_was_invalid(status):
        tick.event("InvalidSpec", f"holding in {status.phase.value}: {problem}", warning=True)
    return False


def _spec_was_invalid(status: ModelSwitchStatus) -> bool:
    return status.phase is Phase.FAILED and status.reason == "InvalidSpec"


# ----------------------------------------------------------------------------------------- write back


def _condition(status: ModelSwitchStatus, kind: str) -> str | None:
    return next((c.status for c in status.conditions if c.type == kind), None)


def _set_condition(tick: Tick, kind: str, value: bool, reason: str, message: str) -> None:
    tick.status.conditions = builders.set_condition(tick.status.conditions, kind, value, reason, message, tick.now,
                                                    tick.generation)


def _outcome(after: ModelSwitchStatus, observed: Observed, events: list[Event], handled: bool) -> Outcome:
    after.observed_generation = observed.generation
    before = read_status(observed.status)
    old, new = before.to_dict(), after.to_dict()
    old.pop("revision", None)
    new.pop("revision", None)
    if old != new:
        after.revision = (before.revision or 0) + 1
    new = after.to_dict()
    return Outcome(status=new, status_patch=builders.merge_patch(owned_status(observed.status), new),
                   events=events, clear_action=handled)
