"""Pure decisions of the rollout: the gate verdict over paired metrics, and where traffic goes next.

The predictor scores every request with both models (the served one and the shadow one), so its
metrics are *paired*: ΔAUC and ΔLogLoss are student minus teacher on the same rows, each with a
confidence interval; PCOC is the student's predicted over observed clicks. With gates
g = (maxAucDrop, maxLogLossRise, maxCalibrationBias, minLabels) and n labelled paired rows:

* **advance** when n ≥ minLabels and the intervals show the student is within every tolerance:
  ΔAUC.lower ≥ −maxAucDrop, ΔLogLoss.upper ≤ maxLogLossRise, and |PCOC − 1| ≤ maxCalibrationBias over
  the whole PCOC interval;
* **roll back** as soon as an interval shows a breach: ΔAUC.upper < −maxAucDrop, ΔLogLoss.lower >
  maxLogLossRise, or the PCOC interval lies wholly outside [1 − bias, 1 + bias] (the interval already
  accounts for n, so a clear breach needs no minimum);
* **hold** otherwise (too few labels, or an interval still straddles a tolerance), and roll back once
  the step has held for its timeout.

Example: n = 150k ≥ 100k, ΔAUC ∈ [−0.0004, 0.0012], ΔLogLoss ∈ [−0.001, 0.0005], PCOC ∈ [0.98, 1.03]
with gates (0.001, 0.002, 0.05) → advance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

from operators.modelswitch.crd import Phase
from operators.modelswitch.models import GatesSpec


@dataclass(frozen=True)
class Interval:
    """A confidence interval; bounds that are NaN or infinite mean "not known yet"."""

    estimate: float
    lower: float
    upper: float
    level: float = 0.95

    @property
    def known(self) -> bool:
        return math.isfinite(self.lower) and math.isfinite(self.upper)


UNKNOWN = Interval(math.nan, math.nan, math.nan, math.nan)
#: |PCOC − 1| is computed, not given: 1 − 0.95 is 0.050000000000000044 in floating point.
CALIBRATION_SLACK = 1e-12


@dataclass(frozen=True)
class PairedMetrics:
    """What the gate reads from the predictor over the current window."""

    paired_rows: int
    delta_auc: Interval
    delta_logloss: Interval
    student_pcoc: Interval
    teacher_pcoc: Interval = UNKNOWN


class Verdict(str, Enum):
    ADVANCE = "Advance"
    HOLD = "Hold"
    ROLL_BACK = "RollBack"


#: Order used by the monotonicity properties: better metrics never give a lower rank.
VERDICT_RANK = {Verdict.ROLL_BACK: 0, Verdict.HOLD: 1, Verdict.ADVANCE: 2}


@dataclass(frozen=True)
class GateDecision:
    verdict: Verdict
    reason: str
    message: str


def breaches(metrics: PairedMetrics, gates: GatesSpec) -> list[str]:
    """The tolerances an interval shows broken (empty when none is shown broken)."""
    found = []
    auc, logloss, pcoc = metrics.delta_auc, metrics.delta_logloss, metrics.student_pcoc
    if math.isfinite(auc.upper) and auc.upper < -gates.max_auc_drop:
        found.append(f"ΔAUC upper bound {auc.upper:+.5f} < -maxAucDrop {-gates.max_auc_drop:+.5f}")
    if math.isfinite(logloss.lower) and logloss.lower > gates.max_log_loss_rise:
        found.append(f"ΔLogLoss lower bound {logloss.lower:+.5f} > maxLogLossRise {gates.max_log_loss_rise:+.5f}")
    if pcoc.known and calibration_distance(pcoc) > gates.max_calibration_bias + CALIBRATION_SLACK:
        found.append(f"PCOC [{pcoc.lower:.4f}, {pcoc.upper:.4f}] lies outside 1 ± {gates.max_calibration_bias}")
    return found


def unproven(metrics: PairedMetrics, gates: GatesSpec) -> list[str]:
    """The tolerances the intervals do not yet show kept (empty when every one is shown kept)."""
    found = []
    auc, logloss, pcoc = metrics.delta_auc, metrics.delta_logloss, metrics.student_pcoc
    if not (math.isfinite(auc.lower) and auc.lower >= -gates.max_auc_drop):
        found.append(f"ΔAUC lower bound {auc.lower:+.5f} not yet ≥ {-gates.max_auc_drop:+.5f}")
    if not (math.isfinite(logloss.upper) and logloss.upper <= gates.max_log_loss_rise):
        found.append(f"ΔLogLoss upper bound {logloss.upper:+.5f} not yet ≤ {gates.max_log_loss_rise:+.5f}")
    if not (pcoc.known and calibration_spread(pcoc) <= gates.max_calibration_bias + CALIBRATION_SLACK):
        found.append(f"PCOC [{pcoc.lower:.4f}, {pcoc.upper:.4f}] not yet within 1 ± {gates.max_calibration_bias}")
    return found


def calibration_spread(pcoc: Interval) -> float:
    """max |PCOC − 1| over the interval: within the bias means the whole interval is calibrated enough."""
    return max(abs(pcoc.lower - 1.0), abs(pcoc.upper - 1.0))


def calibration_distance(pcoc: Interval) -> float:
    """min |PCOC − 1| over the interval (0 when it contains 1): beyond the bias means surely miscalibrated."""
    if pcoc.lower <= 1.0 <= pcoc.upper:
        return 0.0
    return min(abs(pcoc.lower - 1.0), abs(pcoc.upper - 1.0))


def evaluate_gates(metrics: PairedMetrics, gates: GatesSpec) -> GateDecision:
    """Advance, hold or roll back on one window of paired metrics (see the module docstring)."""
    broken = breaches(metrics, gates)
    if broken and metrics.paired_rows > 0:
        return GateDecision(Verdict.ROLL_BACK, "GateBreached", "; ".join(broken))
    if metrics.paired_rows < gates.min_labels:
        return GateDecision(Verdict.HOLD, "AwaitingLabels",
                            f"{metrics.paired_rows} of {gates.min_labels} labelled paired rows")
    pending = unproven(metrics, gates)
    if pending:
        return GateDecision(Verdict.HOLD, "GateUndecided", "; ".join(pending))
    return GateDecision(Verdict.ADVANCE, "GatePassed",
                        f"n={metrics.paired_rows}: ΔAUC ≥ {metrics.delta_auc.lower:+.5f}, "
                        f"ΔLogLoss ≤ {metrics.delta_logloss.upper:+.5f}, "
                        f"PCOC in [{metrics.student_pcoc.lower:.4f}, {metrics.student_pcoc.upper:.4f}]")


def with_timeout(decision: GateDecision, held_seconds: float, timeout_seconds: float) -> GateDecision:
    """A hold that has lasted the step's timeout becomes a roll back."""
    if decision.verdict is Verdict.HOLD and held_seconds >= timeout_seconds:
        return GateDecision(Verdict.ROLL_BACK, "StepTimedOut",
                            f"gates undecided after {held_seconds:.0f}s (timeout {timeout_seconds}s): "
                            f"{decision.message}")
    return decision


@dataclass(frozen=True)
class Position:
    """Where the rollout stands: Shadow (0% on the student), a Canary step, or an end of it."""

    phase: Phase
    step: int | None = None  # index into the steps while Canary
    percent: int = 0  # share of traffic on the student


def next_position(position: Position, verdict: Verdict, steps: list[int], auto_promote: bool) -> Position:
    """The traffic ladder: one step up per passed gate, straight to 0% on a roll back.

    Shadow → Canary(0) → … → Canary(last) → Promoted (if auto-promote; else Canary(last) holds until
    a person promotes). Only called in Shadow or Canary.
    """
    if position.phase not in (Phase.SHADOW, Phase.CANARY):
        raise ValueError(f"no rollout position in phase {position.phase.value}")
    if verdict is Verdict.ROLL_BACK:
        return Position(Phase.ROLLED_BACK, None, 0)
    if verdict is Verdict.HOLD:
        return position
    following = 0 if position.phase is Phase.SHADOW else (position.step or 0) + 1
    if following < len(steps):
        return Position(Phase.CANARY, following, steps[following])
    if auto_promote:
        return Position(Phase.PROMOTED, None, 100)
    return position
