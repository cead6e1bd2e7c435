"""The reconcile pass without Kubernetes: the operator's decisions and calls, tick by tick, on fake services.

`Driver` (operator_driver) plays the API server: it keeps the object, applies each pass's status merge
patch and annotation removal, and checks every status the operator writes against the CRD's schema.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from operator_driver import T0, Driver, merge_patch_into
from operator_fakes import BROKEN, FEW_LABELS, GOOD, Platform, ServiceBackend
from operator_harness import SPEC
from operators.modelswitch import builders
from operators.modelswitch.clients import Service
from operators.modelswitch.decisions import Interval, PairedMetrics
from operators.modelswitch.models import ModelSwitchSpec

@pytest.fixture
def driver(platform: Platform, open_api_schema: dict[str, Any]) -> Driver:
    return Driver(platform, open_api_schema)


# ----------------------------------------------------------------------------------------- builders


def test_requests_follow_the_spec() -> None:
    spec = ModelSwitchSpec.model_validate(SPEC)
    projection = builders.projection_request(spec, "p", "rid")
    assert (projection.teacher.name, projection.teacher.version, projection.width) == ("ctr/mlp-teacher", "v000003", 16)
    assert projection.student_name == "p/projected"
    sampling = builders.sampling_request(spec, "p", "rid")
    assert (sampling.dataset, sampling.ratio, sampling.positive_ratio, sampling.temporal_blocks) == (
        "ctr/train", 0.1, 0.5, 10)
    codistill = builders.codistillation_request(spec, "p", builders.CheckpointRef("p/offline", "v000001"), "rid")
    assert (codistill.replay, codistill.stream, codistill.teacher_update_interval) == ("ctr/train", "ctr/stream", 10)
    assert (codistill.student_name, codistill.teacher_name) == ("p/student", "p/teacher")
    assert builders.artifact_prefix("ml", "sw", spec) == "modelswitch/ml/sw"
    # the switch's options beyond the paper, at their defaults: the paper's teacher, the gate, fixed drift
    assert (codistill.collaborative, codistill.kd_gate, codistill.drift.rolling) == (None, "teacher_better", False)


def test_the_switch_options_follow_the_spec() -> None:
    spec = ModelSwitchSpec.model_validate({
        **SPEC, "offline": {"distillation": {"kdGate": "all"}},
        "online": {"drift": {"rolling": True, "windowRows": 2}, "collaborative": {"temperature": 2.0}}})
    distill = builders.distillation_request(spec, "p", builders.CheckpointRef("p/projected"), "p/sample", "rid")
    codistill = builders.codistillation_request(spec, "p", builders.CheckpointRef("p/offline", "v000001"), "rid")
    assert distill.kd_gate == codistill.kd_gate == "all"
    assert (codistill.drift.rolling, codistill.drift.window_rows) == (True, 2)
    assert builders.drift_request(spec, "rid").drift == codistill.drift
    assert codistill.collaborative == builders.Collaborative(weight=1.0, temperature=2.0, gate="student_better",
                                                             scale_by_t2=True)


def test_the_distillation_carries_the_samples_prior_correction(driver: Driver) -> None:
    """A class-balanced sample (50% positives of a 20% source) shifts the student's BCE logit by
    logit(0.5) − logit(0.2), as the in-process switch does, so the student stays calibrated."""
    import math

    driver.run_until("OnlineCoDistilling", "Shadow")
    sample = driver.status["artifacts"]["sample"]
    assert (sample["positiveRate"], sample["sourcePositiveRate"]) == (0.5, 0.2)
    distillations = [request for kind, request in driver.platform.services.starts if kind == "distillation"]
    assert distillations and distillations[0].task_logit_shift == pytest.approx(-math.log(0.2 / 0.8))
    assert builders.prior_shift(None) == 0.0
    assert builders.prior_shift(builders.DatasetStatus(name="s", positive_rate=0.5, source_positive_rate=1.0)) == 0.0


def test_request_ids_are_stable_and_change_with_the_attempt() -> None:
    first = builders.request_id("ml", "sw", "u-1", "sampling", 0)
    assert first == builders.request_id("ml", "sw", "u-1", "sampling", 0)
    assert first != builders.request_id("ml", "sw", "u-1", "sampling", 1)
    assert first != builders.request_id("ml", "sw", "u-2", "sampling", 0)  # a new object of the same name


def test_the_salt_is_fixed_per_switch() -> None:
    assert builders.student_split(5, "ml", "sw", "u").salt == builders.student_split(50, "ml", "sw", "u").salt
    assert builders.student_split(5, "ml", "sw", "u").salt != builders.student_split(5, "ml", "sw", "v").salt


def test_merge_patch_round_trips() -> None:
    old = {"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}
    new = {"a": 1, "b": {"c": 5}, "f": {"g": None} and {"g": 1}}
    assert merge_patch_into(old, builders.merge_patch(old, new)) == new


# ------------------------------------------------------------------------------------- the pipeline


def test_a_switch_runs_every_stage_once_and_is_promoted(driver: Driver) -> None:
    driver.run_until("Promoted")
    services = driver.platform.services
    for kind in ("projection", "sampling", "distillation", "drift", "codistillation"):
        requests = services.starts_of(kind)
        assert len({r.request_id for r in requests}) == 1, kind  # one operation per stage
    distillation = services.starts_of("distillation")[0]
    assert distillation.student.name == "modelswitch/ml/sw/projected"
    assert distillation.sample == "modelswitch/ml/sw/sample"
    assert distillation.student_model.architecture == "fibinet"
    assert services.starts_of("codistillation")[0].student.name == "modelswitch/ml/sw/offline"
    assert driver.platform.predictor.weights() == [0.0, 0.05, 0.25, 0.5, 1.0, 0.0]
    assert driver.platform.predictor.teacher.name == "modelswitch/ml/sw/student"  # the student serves now
    assert driver.status["rollout"]["previousTeacher"] == {"name": "ctr/mlp-teacher", "version": "v000003"}
    conditions = {c["type"]: c["status"] for c in driver.status["conditions"]}
    assert conditions["Ready"] == "True" and conditions["Degraded"] == "False"
    phases = [h["phase"] for h in driver.status["history"]]
    assert phases == ["Pending", "Projecting", "Sampling", "OfflineDistilling", "OnlineCoDistilling", "Shadow",
                      "Canary", "Canary", "Canary", "Canary", "Promoted"]


def test_without_the_online_stage_the_offline_student_is_shadowed(driver: Driver) -> None:
    driver.spec["online"] = {"enabled": False}
    driver.run_until("Shadow")
    assert driver.platform.services.starts_of("codistillation") == []
    assert driver.status["artifacts"]["student"]["name"] == "modelswitch/ml/sw/offline"


def test_a_broken_student_is_rolled_back_in_the_same_pass(driver: Driver) -> None:
    driver.run_until("Canary")
    driver.tick()  # 25%
    driver.platform.predictor.metrics = lambda backend: BROKEN
    outcome = driver.tick()
    assert driver.phase == "RolledBack" and driver.status["reason"] == "GateBreached"
    assert driver.platform.predictor.split.student_weight == 0.0  # within this very pass
    assert driver.status["rollout"] == {"teacherRestored": True} and driver.status["studentPercent"] == 0
    assert {"GateBreached", "TeacherRestored"} <= {e.reason for e in outcome.events}
    assert any(e.type == "Warning" for e in outcome.events)


def test_a_step_that_never_decides_times_out(driver: Driver) -> None:
    driver.spec["rollout"]["timeouts"] = {"stepSeconds": 30, "shadowSeconds": 30}
    driver.platform.predictor.metrics = lambda backend: FEW_LABELS
    driver.run_until("Shadow")
    driver.tick()  # arms ready; the window starts
    for _ in range(29):
        driver.tick()
        assert driver.phase == "Shadow" and driver.status["gate"]["reason"] == "AwaitingLabels"
    driver.tick()
    driver.tick()
    assert driver.phase == "RolledBack" and driver.status["reason"] == "StepTimedOut"


def test_rollback_waits_out_a_predictor_outage(driver: Driver) -> None:
    driver.run_until("Canary")
    backend = driver.platform.predictor
    backend.metrics = lambda b: BROKEN
    backend.failing_splits = 1  # the rollback's SetSplit(0) fails once
    driver.tick()
    assert driver.phase == "RolledBack" and driver.status["rollout"]["teacherRestored"] is False
    assert "RestoreDelayed" in driver.reasons() and backend.split.student_weight == 0.05
    driver.tick()  # the next pass restores the teacher
    assert driver.status["rollout"]["teacherRestored"] is True and backend.split.student_weight == 0.0


def test_a_student_the_predictor_cannot_load_rolls_back(driver: Driver) -> None:
    driver.platform.predictor.missing.add("modelswitch/ml/sw/student")
    driver.run_until("Shadow")
    driver.tick()
    assert driver.phase == "RolledBack" and driver.status["reason"] == "PredictorRejected"
    assert "NOT_FOUND" in driver.status["message"] and driver.platform.predictor.split.student_weight == 0.0
    assert driver.status["rollout"] == {"teacherRestored": True}


def test_a_lost_operation_fails_the_switch(driver: Driver) -> None:
    driver.run_until("Sampling")
    driver.tick()
    driver.platform.services.ops.clear()  # the operation store was wiped
    driver.tick()
    assert driver.phase == "Failed" and driver.status["reason"] == "SamplerRejected"
    driver.action = "retry"
    driver.run_until("Promoted")
    assert len(driver.platform.services.starts_of("sampling")) == 2


def test_unreachable_services_hold_the_phase_and_say_so(driver: Driver) -> None:
    driver.run_until("Sampling")
    driver.platform.services.down.add(Service.SAMPLER)
    for _ in range(3):
        driver.tick()
    assert driver.phase == "Sampling"
    conditions = {c["type"]: c for c in driver.status["conditions"]}
    assert conditions["ServicesAvailable"]["status"] == "False"
    assert driver.reasons().count("ServiceUnavailable") == 1  # one event, not one per pass
    driver.platform.services.down.clear()
    driver.run_until("OfflineDistilling")
    assert len(driver.platform.services.starts_of("sampling")) == 1  # started once it could be


def test_a_failed_stage_fails_the_switch_and_retry_starts_a_new_operation(driver: Driver) -> None:
    driver.platform.services.failures["distillation"] = ("DATA_LOSS", "corrupt shard part-3")
    driver.run_until("Failed")
    assert driver.status["reason"] == "OfflineDistillationFailed"
    assert "DATA_LOSS: corrupt shard part-3" in driver.status["message"]
    assert driver.status["resumePhase"] == "OfflineDistilling"
    del driver.platform.services.failures["distillation"]
    driver.action = "retry"
    driver.tick()
    assert driver.phase == "OfflineDistilling" and driver.status["attempt"] == 1 and driver.action is None
    driver.run_until("Promoted")
    first, second = driver.platform.services.starts_of("distillation")
    assert first.request_id.endswith("/offline-distillation/0") and second.request_id.endswith("/1")
    assert len(driver.platform.services.starts_of("sampling")) == 1  # finished stages are not redone


def test_abort_during_training_cancels_the_operation(driver: Driver) -> None:
    driver.run_until("Sampling")
    driver.platform.services.polls = 100  # sampling runs until cancelled
    driver.tick()
    driver.action = "abort"
    driver.tick()
    assert driver.phase == "RolledBack" and driver.status["reason"] == "Aborted"
    assert driver.platform.services.cancels == [driver.status["operations"]["sampling"]["id"]]
    assert driver.status["operations"]["sampling"]["state"] == "Cancelled"
    assert driver.platform.predictor.calls == []  # the predictor was never touched


def test_promote_is_refused_before_a_student_is_served(driver: Driver) -> None:
    driver.run_until("Projecting")
    driver.action = "promote"
    outcome = driver.tick()
    assert driver.phase == "Projecting" and driver.action is None
    assert [e.reason for e in outcome.events] == ["PromoteIgnored"]


def test_an_unknown_action_is_reported_and_removed(driver: Driver) -> None:
    driver.run_until("Projecting")
    driver.action = "rollback-please"
    outcome = driver.tick()
    assert [e.reason for e in outcome.events] == ["UnknownAction"] and driver.action is None


def test_manual_promotion_when_auto_promote_is_off(driver: Driver) -> None:
    driver.spec["rollout"]["autoPromote"] = False
    driver.run_until("Canary")
    for _ in range(8):
        driver.tick()
    assert driver.phase == "Canary" and driver.status["studentPercent"] == 100
    assert driver.status["reason"] == "AwaitingPromotion"
    driver.action = "promote"
    driver.tick()
    assert driver.phase == "Promoted" and driver.status["reason"] == "PromotedByUser"
    assert driver.status["rollout"]["promotionComplete"] is True


def test_aborting_a_promotion_puts_the_old_teacher_back(driver: Driver) -> None:
    driver.run_until("Promoted")
    driver.action = "abort"
    driver.tick()
    assert driver.phase == "RolledBack"
    backend = driver.platform.predictor
    assert backend.teacher.name == "ctr/mlp-teacher" and backend.split.student_weight == 0.0


def test_abort_leaves_a_later_switch_alone(driver: Driver) -> None:
    driver.run_until("Promoted")
    driver.platform.predictor.teacher = builders.CheckpointRef("modelswitch/ml/next/student", "v000001")
    driver.action = "abort"
    outcome = driver.tick()
    assert driver.phase == "Promoted" and [e.reason for e in outcome.events] == ["AbortIgnored"]


def test_pause_freezes_traffic_and_resume_restarts_the_window(driver: Driver) -> None:
    driver.platform.predictor.metrics = lambda backend: FEW_LABELS
    driver.run_until("Shadow")
    driver.tick()
    driver.platform.predictor.metrics = lambda backend: GOOD
    driver.tick()
    assert driver.phase == "Canary" and driver.status["studentPercent"] == 5
    driver.spec["paused"] = True
    calls = len(driver.platform.predictor.calls)
    for _ in range(5):
        driver.tick(seconds=600)
    assert driver.phase == "Paused" and driver.status["resumePhase"] == "Canary"
    assert len(driver.platform.predictor.calls) == calls  # nothing asked of the predictor while paused
    assert driver.platform.predictor.split.student_weight == 0.05
    driver.spec["paused"] = False
    driver.tick()
    assert driver.phase == "Canary" and driver.status["stepStartedAt"] == builders.timestamp(driver.now
                                                                                             - timedelta(seconds=1))
    driver.run_until("Promoted")


def test_a_second_rollout_waits_for_the_predictor(driver: Driver) -> None:
    driver.owners = frozenset({"ml/other"})
    driver.run_until("Shadow")
    for _ in range(3):
        driver.tick()
    assert driver.phase == "Shadow" and driver.status["reason"] == "PredictorBusy"
    assert driver.platform.predictor.calls == []
    assert driver.reasons().count("PredictorBusy") == 1
    driver.owners = frozenset({"ml/sw"})  # only itself
    driver.run_until("Promoted")


def test_no_rollout_against_a_teacher_that_is_not_serving(driver: Driver) -> None:
    driver.platform.predictor.teacher = builders.CheckpointRef("ctr/other-model", "v000001")
    driver.run_until("Shadow")
    for _ in range(3):
        driver.tick()
    assert driver.phase == "Shadow" and driver.status["reason"] == "TeacherNotServing"
    assert [c[0] for c in driver.platform.predictor.calls] == ["metrics"] * 3  # looked, touched nothing
    assert driver.reasons().count("TeacherNotServing") == 1
    driver.platform.predictor.teacher = builders.CheckpointRef("ctr/mlp-teacher", "v000003")
    driver.run_until("Promoted")


def test_a_predictor_changed_behind_the_operators_back_is_set_right(driver: Driver) -> None:
    driver.run_until("Canary")
    driver.platform.predictor.split = builders.Split(0.9, "x")  # someone else's SetSplit
    driver.platform.predictor.metrics = lambda backend: FEW_LABELS
    outcome = driver.tick()
    assert "SplitRestored" in [e.reason for e in outcome.events]
    assert driver.platform.predictor.split.student_weight == 0.05


def test_an_invalid_spec_fails_a_new_switch_until_fixed(driver: Driver) -> None:
    driver.spec["rollout"]["steps"] = [50, 25]
    driver.tick()
    assert driver.phase == "Failed" and driver.status["reason"] == "InvalidSpec"
    assert "increase strictly" in driver.status["message"]
    driver.spec["rollout"]["steps"] = [25, 50]
    driver.tick()
    assert driver.phase == "Pending" and driver.status["reason"] == "SpecFixed"
    driver.run_until("Promoted")


def test_an_invalid_spec_mid_rollout_holds_the_traffic(driver: Driver) -> None:
    driver.run_until("Canary")
    driver.spec["rollout"]["steps"] = [50, 25]
    for _ in range(3):
        driver.tick()
    assert driver.phase == "Canary" and driver.platform.predictor.split.student_weight == 0.05
    assert driver.reasons().count("InvalidSpec") == 1


def test_abort_works_even_with_an_invalid_spec(driver: Driver) -> None:
    driver.run_until("Canary")
    driver.spec["rollout"]["steps"] = [50, 25]
    driver.action = "abort"
    driver.tick()
    assert driver.phase == "RolledBack" and driver.action is None
    assert driver.platform.predictor.split.student_weight == 0.0


def test_nothing_changes_nothing_is_written(driver: Driver) -> None:
    driver.run_until("Promoted")
    driver.tick()
    outcome = driver.tick()
    assert outcome.status_patch == {} and outcome.events == []


# -------------------------------------------------------------------------------------- properties

verdict_metrics = st.sampled_from([GOOD, BROKEN, FEW_LABELS, PairedMetrics(
    200_000, Interval(-0.0005, -0.003, 0.002), Interval(0.0, -0.001, 0.004), Interval(1.0, 0.97, 1.03))])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(script=st.lists(st.tuples(verdict_metrics, st.sampled_from([None, None, None, "abort", "promote"])),
                       min_size=1, max_size=12))
def test_every_roll_back_leaves_the_student_at_zero_in_the_same_pass(script: list, open_api_schema: dict) -> None:
    driver = Driver(Platform(services=ServiceBackend(polls=1)), open_api_schema)
    driver.run_until("Shadow")
    driver.tick()
    percents = []
    for metrics, action in script:
        driver.platform.predictor.metrics = lambda backend, m=metrics: m
        driver.action = action
        before = driver.phase
        driver.tick()
        weight = driver.platform.predictor.split.student_weight
        if driver.phase == "RolledBack":
            assert weight == 0.0 and driver.status["studentPercent"] == 0
            assert driver.platform.predictor.teacher.name == "ctr/mlp-teacher"
        elif driver.phase == "Canary":
            assert weight == driver.status["studentPercent"] / 100
            percents.append(driver.status["studentPercent"])
        if before == "RolledBack":
            assert driver.phase == "RolledBack"  # only a retry leaves it
    assert percents == sorted(percents)  # traffic on the student only ever climbs


def test_a_view_older_than_the_last_write_is_skipped_for_a_while() -> None:
    from operators.modelswitch.handlers import is_stale

    patience = timedelta(seconds=30)
    assert not is_stale({}, {"revision": 3}, T0, patience)  # a fresh process trusts what it sees
    memo = {"written_revision": 5, "written_at": T0}
    assert is_stale(memo, {"revision": 4}, T0 + timedelta(seconds=1), patience)
    assert not is_stale(memo, {"revision": 5}, T0 + timedelta(seconds=1), patience)
    assert not is_stale(memo, {"revision": 4}, T0 + timedelta(seconds=31), patience)  # the write was lost


def test_observe_reads_the_action_and_the_predictor_owners() -> None:
    from operators.modelswitch.handlers import PREDICTOR_OWNER, observe

    body = {"metadata": {"name": "sw", "namespace": "ml", "uid": "u", "generation": 4,
                         "annotations": {"crossadapt.io/action": "abort", "other": "x"}},
            "spec": {"paused": True}, "status": {"phase": "Canary"}}
    observed = observe(body, {PREDICTOR_OWNER: ["ml/a", "ml/b"]}, T0)
    assert (observed.action, observed.generation, observed.predictor_owners) == ("abort", 4,
                                                                                 frozenset({"ml/a", "ml/b"}))
    assert observe({"metadata": {"name": "n"}}, None, T0).action is None
