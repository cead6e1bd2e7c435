"""The ModelSwitch rollout without Kubernetes: replayed traffic, a real predictor, the operator's decisions.

`run_rollout` walks the traffic ladder exactly as the operator's Shadow and Canary phases do, with
the operator's own pure functions (`operators.modelswitch.decisions`): after each batch of traffic
it reads the predictor's paired metrics for the current step's window (`GetArmMetrics`), decides
with `evaluate_gates` and `with_timeout`, and moves with `next_position`. Only the clock differs:
a step's age is measured on the replay's clock (the traffic's own timestamps), so `timeouts` mean
traffic time, as they would in production.

Ends as the operator's do: a roll back puts 100% of traffic on the teacher (SetSplit 0); a promotion
puts the student on the teacher arm and all traffic there (SwapArm, then SetSplit 0). Traffic that
runs out while a step still holds ends the rollout as the step's timeout would: rolled back.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from operators.modelswitch.builders import split_salt
from operators.modelswitch.clients import Arm, CheckpointRef, PredictorAdmin, Split
from operators.modelswitch.crd import Phase
from operators.modelswitch.decisions import (
    GateDecision,
    Interval,
    Position,
    Verdict,
    evaluate_gates,
    next_position,
    with_timeout,
)
from operators.modelswitch.models import RolloutSpec
from operators.local_rollout.traffic import LabelDelivery, ReplayTraffic, v2_protos


def interval_figures(interval: Interval) -> dict[str, float | None]:
    """An interval as JSON (unknown bounds as null)."""
    def finite(value: float) -> float | None:
        return value if math.isfinite(value) else None

    return {"estimate": finite(interval.estimate), "lower": finite(interval.lower), "upper": finite(interval.upper)}


@dataclass(frozen=True)
class GateCheck:
    """One gate evaluation: where traffic stood, what the predictor reported, what was decided."""

    phase: str
    step: int | None
    student_percent: int
    rows_sent: int
    labelled_rows: int
    held_seconds: float
    paired_rows: int
    delta_auc: dict[str, float | None]
    delta_logloss: dict[str, float | None]
    student_pcoc: dict[str, float | None]
    teacher_pcoc: dict[str, float | None]
    verdict: str
    reason: str
    message: str


@dataclass
class RolloutResult:
    outcome: str  # Promoted, RolledBack, or Canary (all steps passed, waiting for a person to promote)
    reason: str
    message: str
    teacher: str
    student: str
    steps: list[int]
    gates: dict[str, Any]
    rows_sent: int = 0
    labelled_rows: int = 0
    checks: list[GateCheck] = field(default_factory=list)
    final_student_weight: float | None = None
    serving_checkpoint: str | None = None
    seconds: float = 0.0

    def step_summaries(self) -> list[GateCheck]:
        """The last check of each position (Shadow, then each Canary step reached)."""
        last: dict[tuple[str, int | None], GateCheck] = {}
        for check in self.checks:
            last[check.phase, check.step] = check
        return list(last.values())

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["step_summaries"] = [asdict(check) for check in self.step_summaries()]
        return result


class ReplayClients:
    """What the replay sends: V2 inference requests (gRPC) and labels (the REST feedback endpoint)."""

    def __init__(self, inference_address: str, http_base: str, model_name: str) -> None:
        import grpc
        import httpx

        self.model_name = model_name
        self._channel = grpc.insecure_channel(inference_address)
        self._stub = v2_protos()[1].GRPCInferenceServiceStub(self._channel)
        self._http = httpx.Client(base_url=http_base, timeout=60)

    def infer(self, request: Any) -> None:
        self._stub.ModelInfer(request, timeout=60)

    def feedback(self, delivery: LabelDelivery) -> int:
        if not delivery.row_ids:
            return 0
        response = self._http.post(f"/v2/models/{self.model_name}/feedback",
                                   json={"row_ids": delivery.row_ids, "labels": delivery.labels})
        response.raise_for_status()
        return int(response.json()["matched"])

    def close(self) -> None:
        self._channel.close()
        self._http.close()


def run_rollout(traffic: ReplayTraffic, admin: PredictorAdmin, clients: ReplayClients, rollout: RolloutSpec, *,
                teacher: CheckpointRef, student: CheckpointRef, name: str = "local",
                on_check: Callable[[GateCheck], None] = lambda _: None) -> RolloutResult:
    """Replay `traffic` through the predictor and roll the student out step by step (module docstring)."""
    started = time.monotonic()
    salt = split_salt("local", name, "")
    result = RolloutResult(outcome="", reason="", message="", teacher=f"{teacher.name}/{teacher.version}",
                           student=f"{student.name}/{student.version}", steps=list(rollout.steps),
                           gates=rollout.gates.model_dump(by_alias=True))
    position = Position(Phase.SHADOW, None, 0)
    serving = admin.arm_metrics(1.0)
    if (serving.teacher_checkpoint, serving.student_checkpoint) != (teacher, student):
        raise RuntimeError(f"the predictor serves {serving.teacher_checkpoint} and {serving.student_checkpoint}, "
                           f"not the teacher {teacher} and the student {student}")
    admin.set_split(Split(0.0, salt))  # Shadow: the teacher serves, the student scores every row in shadow
    step_wall, step_clock = time.time(), None
    sent = 0
    decision: GateDecision | None = None
    for start in traffic.batches:
        clients.infer(traffic.request(start, clients.model_name))
        sent = min(start + traffic.batch_rows, len(traffic))
        clock = traffic.clock_after(start)
        step_clock = clock if step_clock is None else step_clock
        clients.feedback(traffic.due_labels(clock, sent))
        held = float(clock - step_clock)
        decision, check = _check(admin, rollout, position, held, step_wall, sent, traffic.labelled_rows)
        result.checks.append(check)
        on_check(check)
        there = next_position(position, decision.verdict, rollout.steps, rollout.auto_promote)
        if there.phase is Phase.ROLLED_BACK:
            _roll_back(admin, salt)
            result.outcome, result.reason, result.message = Phase.ROLLED_BACK.value, decision.reason, decision.message
            break
        if there.phase is Phase.PROMOTED:
            _promote(admin, student, salt)
            result.outcome, result.reason = Phase.PROMOTED.value, "Promoted"
            result.message = f"last step passed: {decision.message}"
            break
        if there != position:
            admin.set_split(Split(there.percent / 100.0, salt))
            position, step_wall, step_clock = there, time.time(), clock
        elif decision.verdict is Verdict.ADVANCE:  # the last step passed and auto-promote is off
            result.outcome, result.reason = Phase.CANARY.value, "AwaitingPromotion"
            result.message = f"all steps passed; promote by hand ({decision.message})"
            break
    else:
        # The traffic ran out with the step still undecided: as if the step's timeout had come.
        timeout = rollout.timeouts.shadow_seconds if position.phase is Phase.SHADOW else rollout.timeouts.step_seconds
        ended = with_timeout(decision, math.inf, timeout) if decision is not None else None
        _roll_back(admin, salt)
        result.outcome = Phase.ROLLED_BACK.value
        result.reason = ended.reason if ended else "NoTraffic"
        result.message = f"the replay ended at {position.percent}% with the gate undecided" + (
            f": {decision.message}" if decision else "")
    clients.feedback(traffic.remaining_labels(sent))
    result.rows_sent, result.labelled_rows = sent, traffic.labelled_rows
    final = admin.arm_metrics(1.0)
    result.final_student_weight = final.split.student_weight if final.split else None
    serving = final.teacher_checkpoint
    result.serving_checkpoint = f"{serving.name}/{serving.version}" if serving else None
    result.seconds = round(time.monotonic() - started, 3)
    return result


def _check(admin: PredictorAdmin, rollout: RolloutSpec, position: Position, held: float, step_wall: float,
           sent: int, labelled: int) -> tuple[GateDecision, GateCheck]:
    """The gate at this point: the step's window of paired metrics, decided as the operator decides."""
    window = max(time.time() - step_wall, 1e-3)  # the rows scored since this step began
    metrics = admin.arm_metrics(window).paired
    timeout = rollout.timeouts.shadow_seconds if position.phase is Phase.SHADOW else rollout.timeouts.step_seconds
    decision = with_timeout(evaluate_gates(metrics, rollout.gates), held, timeout)
    check = GateCheck(phase=position.phase.value, step=position.step, student_percent=position.percent,
                      rows_sent=sent, labelled_rows=labelled, held_seconds=held, paired_rows=metrics.paired_rows,
                      delta_auc=interval_figures(metrics.delta_auc),
                      delta_logloss=interval_figures(metrics.delta_logloss),
                      student_pcoc=interval_figures(metrics.student_pcoc),
                      teacher_pcoc=interval_figures(metrics.teacher_pcoc),
                      verdict=decision.verdict.value, reason=decision.reason, message=decision.message)
    return decision, check


def _roll_back(admin: PredictorAdmin, salt: str) -> None:
    """The operator's restore: 100% of traffic on the teacher."""
    admin.set_split(Split(0.0, salt))


def _promote(admin: PredictorAdmin, student: CheckpointRef, salt: str) -> None:
    """The operator's promotion: the student on the teacher arm (the serving one), all traffic there."""
    admin.swap_arm(Arm.TEACHER, student)
    admin.set_split(Split(0.0, salt))
