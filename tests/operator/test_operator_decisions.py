"""The gate verdict and the traffic ladder: a decision table and properties over random metrics."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from operators.modelswitch.crd import Phase
from operators.modelswitch.decisions import (
    UNKNOWN,
    VERDICT_RANK,
    Interval,
    PairedMetrics,
    Position,
    Verdict,
    evaluate_gates,
    next_position,
    with_timeout,
)
from operators.modelswitch.models import GatesSpec

GATES = GatesSpec(max_auc_drop=0.001, max_log_loss_rise=0.002, max_calibration_bias=0.05, min_labels=100_000)
OK_AUC, OK_LL, OK_PCOC = Interval(0.0002, -0.0004, 0.0008), Interval(0.0, -0.001, 0.0015), Interval(1.0, 0.97, 1.03)


def metrics(n: int = 150_000, auc: Interval = OK_AUC, ll: Interval = OK_LL, pcoc: Interval = OK_PCOC) -> PairedMetrics:
    return PairedMetrics(paired_rows=n, delta_auc=auc, delta_logloss=ll, student_pcoc=pcoc)


@pytest.mark.parametrize(("case", "observed", "verdict", "reason"), [
    ("all bounds inside, enough labels", metrics(), Verdict.ADVANCE, "GatePassed"),
    ("exactly minLabels", metrics(n=100_000), Verdict.ADVANCE, "GatePassed"),
    ("bounds exactly on the tolerances", metrics(auc=Interval(0, -0.001, 0.001), ll=Interval(0, -0.001, 0.002),
                                                 pcoc=Interval(1, 0.95, 1.05)), Verdict.ADVANCE, "GatePassed"),
    ("one label short", metrics(n=99_999), Verdict.HOLD, "AwaitingLabels"),
    ("ΔAUC interval straddles -maxAucDrop", metrics(auc=Interval(-0.0005, -0.002, 0.001)), Verdict.HOLD,
     "GateUndecided"),
    ("ΔLogLoss interval straddles the rise", metrics(ll=Interval(0.001, -0.001, 0.003)), Verdict.HOLD,
     "GateUndecided"),
    ("PCOC interval straddles 1 + bias", metrics(pcoc=Interval(1.04, 1.02, 1.07)), Verdict.HOLD, "GateUndecided"),
    ("intervals not known yet", metrics(auc=UNKNOWN, ll=UNKNOWN, pcoc=UNKNOWN), Verdict.HOLD, "GateUndecided"),
    ("ΔAUC surely below -maxAucDrop", metrics(auc=Interval(-0.01, -0.012, -0.0011)), Verdict.ROLL_BACK,
     "GateBreached"),
    ("ΔLogLoss surely above the rise", metrics(ll=Interval(0.01, 0.0021, 0.02)), Verdict.ROLL_BACK, "GateBreached"),
    ("student over-predicts", metrics(pcoc=Interval(1.2, 1.06, 1.3)), Verdict.ROLL_BACK, "GateBreached"),
    ("student under-predicts", metrics(pcoc=Interval(0.8, 0.7, 0.94)), Verdict.ROLL_BACK, "GateBreached"),
    ("a clear breach needs no minLabels", metrics(n=500, auc=Interval(-0.2, -0.25, -0.15)), Verdict.ROLL_BACK,
     "GateBreached"),
    ("no rows, no verdict but hold", metrics(n=0, auc=Interval(-0.2, -0.25, -0.15)), Verdict.HOLD,
     "AwaitingLabels"),
    ("a breach wins over passing bounds elsewhere", metrics(ll=Interval(0.01, 0.005, 0.02)), Verdict.ROLL_BACK,
     "GateBreached"),
])
def test_gate_decision_table(case: str, observed: PairedMetrics, verdict: Verdict, reason: str) -> None:
    decision = evaluate_gates(observed, GATES)
    assert (decision.verdict, decision.reason) == (verdict, reason), case
    assert decision.message


def test_breach_message_names_the_broken_gate() -> None:
    decision = evaluate_gates(metrics(auc=Interval(-0.01, -0.012, -0.0011)), GATES)
    assert "ΔAUC upper bound" in decision.message and "ΔLogLoss" not in decision.message


def test_a_hold_becomes_a_roll_back_at_the_timeout_and_nothing_else_does() -> None:
    hold = evaluate_gates(metrics(n=10), GATES)
    assert with_timeout(hold, 3599, 3600).verdict is Verdict.HOLD
    timed_out = with_timeout(hold, 3600, 3600)
    assert (timed_out.verdict, timed_out.reason) == (Verdict.ROLL_BACK, "StepTimedOut")
    advance = evaluate_gates(metrics(), GATES)
    assert with_timeout(advance, 10**6, 1) == advance


STEPS = [5, 25, 50, 100]


@pytest.mark.parametrize(("here", "verdict", "auto", "there"), [
    (Position(Phase.SHADOW), Verdict.ADVANCE, True, Position(Phase.CANARY, 0, 5)),
    (Position(Phase.SHADOW), Verdict.HOLD, True, Position(Phase.SHADOW)),
    (Position(Phase.SHADOW), Verdict.ROLL_BACK, True, Position(Phase.ROLLED_BACK, None, 0)),
    (Position(Phase.CANARY, 1, 25), Verdict.ADVANCE, True, Position(Phase.CANARY, 2, 50)),
    (Position(Phase.CANARY, 1, 25), Verdict.ROLL_BACK, True, Position(Phase.ROLLED_BACK, None, 0)),
    (Position(Phase.CANARY, 3, 100), Verdict.ADVANCE, True, Position(Phase.PROMOTED, None, 100)),
    (Position(Phase.CANARY, 3, 100), Verdict.ADVANCE, False, Position(Phase.CANARY, 3, 100)),
])
def test_traffic_ladder(here: Position, verdict: Verdict, auto: bool, there: Position) -> None:
    assert next_position(here, verdict, STEPS, auto) == there


def test_the_ladder_has_no_position_outside_the_rollout() -> None:
    with pytest.raises(ValueError, match="no rollout position"):
        next_position(Position(Phase.SAMPLING), Verdict.ADVANCE, STEPS, True)


# ---------------------------------------------------------------------------------------- properties

bounds = st.floats(-0.05, 0.05, allow_nan=False)
pcoc_bounds = st.floats(0.5, 1.5, allow_nan=False)
rows = st.integers(0, 400_000)
gates = st.builds(GatesSpec, max_auc_drop=st.floats(0, 0.01), max_log_loss_rise=st.floats(0, 0.01),
                  max_calibration_bias=st.floats(0, 0.2), min_labels=st.integers(1, 300_000))


@st.composite
def intervals(draw: st.DrawFn, values: st.SearchStrategy[float]) -> Interval:
    a, b = sorted((draw(values), draw(values)))
    return Interval((a + b) / 2, a, b)


paired = st.builds(PairedMetrics, paired_rows=rows, delta_auc=intervals(bounds), delta_logloss=intervals(bounds),
                   student_pcoc=intervals(pcoc_bounds))


@settings(max_examples=300, deadline=None)
@given(observed=paired, gate=gates)
def test_never_advances_below_min_labels(observed: PairedMetrics, gate: GatesSpec) -> None:
    decision = evaluate_gates(observed, gate)
    if observed.paired_rows < gate.min_labels:
        assert decision.verdict is not Verdict.ADVANCE
    if decision.verdict is Verdict.ADVANCE:  # and an advance is backed by every bound
        assert observed.delta_auc.lower >= -gate.max_auc_drop
        assert observed.delta_logloss.upper <= gate.max_log_loss_rise
        assert abs(observed.student_pcoc.lower - 1) <= gate.max_calibration_bias + 1e-12
        assert abs(observed.student_pcoc.upper - 1) <= gate.max_calibration_bias + 1e-12


@settings(max_examples=300, deadline=None)
@given(observed=paired, gate=gates)
def test_decisions_are_deterministic(observed: PairedMetrics, gate: GatesSpec) -> None:
    assert evaluate_gates(observed, gate) == evaluate_gates(observed, gate.model_copy())


def _better(m: PairedMetrics, extra_rows: int, auc_up: float, ll_down: float, pcoc_shrink: float) -> PairedMetrics:
    """Metrics no worse on any bound: more rows, higher ΔAUC, lower ΔLogLoss, PCOC closer to 1."""
    pcoc = m.student_pcoc

    def closer(x: float) -> float:
        return 1 + (x - 1) * (1 - pcoc_shrink)

    return PairedMetrics(
        paired_rows=m.paired_rows + extra_rows,
        delta_auc=Interval(m.delta_auc.estimate + auc_up, m.delta_auc.lower + auc_up, m.delta_auc.upper + auc_up),
        delta_logloss=Interval(m.delta_logloss.estimate - ll_down, m.delta_logloss.lower - ll_down,
                               m.delta_logloss.upper - ll_down),
        student_pcoc=Interval(closer(pcoc.estimate), closer(pcoc.lower), closer(pcoc.upper)))


improvement = dict(extra_rows=st.integers(0, 100_000), auc_up=st.floats(0, 0.01), ll_down=st.floats(0, 0.01),
                   pcoc_shrink=st.floats(0, 1))


@settings(max_examples=300, deadline=None)
@given(observed=paired, gate=gates, **improvement)
def test_better_metrics_never_get_a_worse_verdict(observed: PairedMetrics, gate: GatesSpec, extra_rows: int,
                                                  auc_up: float, ll_down: float, pcoc_shrink: float) -> None:
    """Monotone: improving every bound (and adding rows) never turns advance into hold or hold into roll back,
    except that rows can turn a 0-row hold into a shown breach."""
    better = _better(observed, extra_rows, auc_up, ll_down, pcoc_shrink)
    before, after = evaluate_gates(observed, gate).verdict, evaluate_gates(better, gate).verdict
    if observed.paired_rows > 0:
        assert VERDICT_RANK[after] >= VERDICT_RANK[before]
    if before is Verdict.ADVANCE:
        assert after is Verdict.ADVANCE


@settings(max_examples=300, deadline=None)
@given(observed=paired, gate=gates, **improvement)
def test_worse_metrics_keep_a_roll_back(observed: PairedMetrics, gate: GatesSpec, extra_rows: int,
                                        auc_up: float, ll_down: float, pcoc_shrink: float) -> None:
    better = _better(observed, extra_rows, auc_up, ll_down, pcoc_shrink)
    if evaluate_gates(better, gate).verdict is Verdict.ROLL_BACK:
        assert evaluate_gates(observed, gate).verdict is Verdict.ROLL_BACK or observed.paired_rows == 0


@settings(max_examples=300, deadline=None)
@given(verdicts=st.lists(st.sampled_from(list(Verdict)), max_size=30),
       steps=st.lists(st.integers(1, 100), min_size=1, max_size=6, unique=True).map(sorted),
       auto=st.booleans())
def test_traffic_only_climbs_while_gates_pass_and_a_roll_back_leaves_zero(verdicts: list[Verdict], steps: list[int],
                                                                          auto: bool) -> None:
    position = Position(Phase.SHADOW)
    for verdict in verdicts:
        if position.phase not in (Phase.SHADOW, Phase.CANARY):
            break
        following = next_position(position, verdict, steps, auto)
        if verdict is Verdict.ROLL_BACK:
            assert following == Position(Phase.ROLLED_BACK, None, 0)
        elif verdict is Verdict.HOLD:
            assert following == position
        else:
            assert following.percent >= position.percent
            assert following.phase is Phase.PROMOTED or following.percent in steps
            if following.phase is Phase.CANARY and following != position:
                assert steps.index(following.percent) == (-1 if position.phase is Phase.SHADOW
                                                         else steps.index(position.percent)) + 1
        position = following


def test_unknown_bounds_are_never_a_breach_or_a_pass() -> None:
    nan = Interval(math.nan, math.nan, math.nan)
    decision = evaluate_gates(PairedMetrics(10**6, nan, nan, nan), GATES)
    assert decision.verdict is Verdict.HOLD
