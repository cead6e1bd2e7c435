"""The real kopf operator against kmock's Kubernetes emulator, with in-memory services and predictor.

Each test creates ModelSwitch objects in the emulator, runs the operator (`running_operator`) and
watches the stored objects, the events and the fake predictor, as `kubectl get/describe` would.
"""

from __future__ import annotations

from typing import Any

import pytest

from operator_crd_schema import errors
from operator_fakes import BROKEN, FEW_LABELS, Platform
from operator_harness import (
    SPEC,
    Emulator,
    add_switch,
    declare_resources,
    delete_switch,
    events,
    patch_switch,
    phase_is,
    running_operator,
    status,
    switch,
    wait_for,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(120)]


@pytest.fixture
def emulator(kmock: Emulator) -> Emulator:
    declare_resources(kmock)
    return kmock


def _spec(**rollout: Any) -> dict[str, Any]:
    return {**SPEC, "rollout": {**SPEC["rollout"], **rollout}}


async def test_happy_path_reaches_promoted(emulator: Emulator, platform: Platform,
                                          open_api_schema: dict[str, Any]) -> None:
    add_switch(emulator, "happy")
    async with running_operator(emulator, platform.clients()):
        await wait_for("Promoted", phase_is(emulator, "happy", "Promoted"))
        await wait_for("promotion complete", lambda: status(emulator, "happy").get("rollout", {}).get(
            "promotionComplete"))
        await wait_for("the promotion event", lambda: "PromotionComplete" in [
            e["reason"] for e in events(emulator, "happy")])
    obj = switch(emulator, "happy")
    assert errors(open_api_schema, obj) == []  # everything the operator wrote fits the CRD
    final = obj["status"]
    assert [h["phase"] for h in final["history"]] == [
        "Pending", "Projecting", "Sampling", "OfflineDistilling", "OnlineCoDistilling", "Shadow",
        "Canary", "Canary", "Canary", "Canary", "Promoted"]
    assert [h["studentPercent"] for h in final["history"] if h["phase"] == "Canary"] == [5, 25, 50, 100]
    assert final["studentPercent"] == 100 and final["gate"]["deltaAuc"]["estimate"] == pytest.approx(0.002)
    assert platform.predictor.weights() == [0.0, 0.05, 0.25, 0.5, 1.0, 0.0]
    assert platform.predictor.teacher.name == "modelswitch/ml/happy/student"
    assert obj["metadata"]["finalizers"] == ["crossadapt.io/modelswitch"]
    reasons = [e["reason"] for e in events(emulator, "happy")]
    for expected in ("Accepted", "Started", "ProjectionSucceeded", "SamplingSucceeded",
                     "OfflineDistillationSucceeded", "OnlineCoDistillationSucceeded", "StudentArmReady",
                     "StepAdvanced", "Promoted", "PromotionComplete"):
        assert expected in reasons
    assert all(e["involvedObject"]["kind"] == "ModelSwitch" for e in events(emulator, "happy"))


async def test_a_broken_student_is_rolled_back_by_its_gate(emulator: Emulator, platform: Platform) -> None:
    """A student whose paired metrics breach the gate (as one trained on shuffled labels does)."""
    platform.predictor.metrics = lambda backend: BROKEN if backend.split.student_weight > 0 else FEW_LABELS
    add_switch(emulator, "broken", _spec(gates={"minLabels": 1}))
    platform.predictor.metrics = lambda backend: BROKEN
    async with running_operator(emulator, platform.clients()):
        await wait_for("RolledBack", phase_is(emulator, "broken", "RolledBack"))
        await wait_for("teacher restored", lambda: status(emulator, "broken")["rollout"].get("teacherRestored"))
        await wait_for("the rollback event", lambda: "GateBreached" in [
            e["reason"] for e in events(emulator, "broken")])
    final = status(emulator, "broken")
    assert final["reason"] == "GateBreached" and "ΔAUC upper bound" in final["message"]
    assert final["studentPercent"] == 0 and platform.predictor.split.student_weight == 0.0
    assert platform.predictor.teacher.name == "ctr/mlp-teacher"
    gate_event = next(e for e in events(emulator, "broken") if e["reason"] == "GateBreached")
    assert gate_event["type"] == "Warning"
    conditions = {c["type"]: c["status"] for c in final["conditions"]}
    assert conditions["Degraded"] == "True" and conditions["Ready"] == "False"


async def test_pause_and_resume_through_spec_paused(emulator: Emulator, platform: Platform) -> None:
    platform.predictor.metrics = lambda backend: FEW_LABELS  # hold in Shadow until the test lets it pass
    add_switch(emulator, "paused")
    async with running_operator(emulator, platform.clients()):
        await wait_for("Shadow", lambda: status(emulator, "paused").get("rollout", {}).get("studentArmReady"))
        await patch_switch(emulator, "paused", {"spec": {"paused": True}})
        await wait_for("Paused", phase_is(emulator, "paused", "Paused"))
        assert status(emulator, "paused")["resumePhase"] == "Shadow"
        calls = len(platform.predictor.calls)
        from operator_fakes import GOOD

        platform.predictor.metrics = lambda backend: GOOD  # would advance at once if it were not paused
        import asyncio

        await asyncio.sleep(1.0)  # ten reconcile intervals
        assert status(emulator, "paused")["phase"] == "Paused" and len(platform.predictor.calls) == calls
        await patch_switch(emulator, "paused", {"spec": {"paused": False}})
        await wait_for("Promoted", phase_is(emulator, "paused", "Promoted"))
    history = [(h["phase"], h["reason"]) for h in status(emulator, "paused")["history"]]
    assert ("Paused", "Paused") in history and ("Shadow", "Resumed") in history


async def test_promote_through_the_annotation(emulator: Emulator, platform: Platform) -> None:
    add_switch(emulator, "manual", _spec(autoPromote=False))
    async with running_operator(emulator, platform.clients()):
        await wait_for("awaiting promotion", lambda: status(emulator, "manual").get("reason") == "AwaitingPromotion")
        assert status(emulator, "manual")["phase"] == "Canary" and platform.predictor.split.student_weight == 1.0
        await patch_switch(emulator, "manual", {"metadata": {"annotations": {"crossadapt.io/action": "promote"}}})
        await wait_for("Promoted", phase_is(emulator, "manual", "Promoted"))
        await wait_for("annotation removed", lambda: "crossadapt.io/action" not in (
            switch(emulator, "manual")["metadata"].get("annotations") or {}))
    assert status(emulator, "manual")["reason"] == "PromotedByUser"
    assert platform.predictor.teacher.name == "modelswitch/ml/manual/student"


async def test_abort_through_the_annotation(emulator: Emulator, platform: Platform) -> None:
    platform.predictor.metrics = lambda backend: FEW_LABELS
    add_switch(emulator, "aborted", _spec(steps=[10, 100]))
    async with running_operator(emulator, platform.clients()):
        await wait_for("Shadow", lambda: status(emulator, "aborted").get("rollout", {}).get("studentArmReady"))
        from operator_fakes import GOOD

        platform.predictor.metrics = lambda backend: GOOD if backend.split.student_weight < 0.1 else FEW_LABELS
        await wait_for("the 10% step", lambda: status(emulator, "aborted").get("studentPercent") == 10)
        await patch_switch(emulator, "aborted", {"metadata": {"annotations": {"crossadapt.io/action": "abort"}}})
        await wait_for("RolledBack", phase_is(emulator, "aborted", "RolledBack"))
        await wait_for("annotation removed", lambda: "crossadapt.io/action" not in (
            switch(emulator, "aborted")["metadata"].get("annotations") or {}))
    assert status(emulator, "aborted")["reason"] == "Aborted"
    assert platform.predictor.split.student_weight == 0.0


async def test_a_restarted_operator_resumes_from_status(emulator: Emulator, platform: Platform) -> None:
    platform.services.held.add("distillation")  # a long offline distillation
    add_switch(emulator, "restart")
    async with running_operator(emulator, platform.clients()):
        await wait_for("distillation running", lambda: status(emulator, "restart").get("operations", {}).get(
            "offlineDistillation", {}).get("state") == "Running")
    operation_id = status(emulator, "restart")["operations"]["offlineDistillation"]["id"]
    assert len(platform.services.starts_of("distillation")) == 1
    platform.services.held.clear()  # the run finishes while no operator is up
    async with running_operator(emulator, platform.clients()):  # a new process: fresh clients, empty memory
        await wait_for("Promoted", phase_is(emulator, "restart", "Promoted"))
    final = status(emulator, "restart")
    assert final["operations"]["offlineDistillation"]["id"] == operation_id  # the same operation, followed on
    assert len(platform.services.starts_of("distillation")) == 1  # and never started a second time
    assert [h["phase"] for h in final["history"]].count("OfflineDistilling") == 1


async def test_deleting_a_switch_mid_rollout_gives_the_traffic_back(emulator: Emulator, platform: Platform) -> None:
    platform.predictor.metrics = lambda backend: FEW_LABELS
    add_switch(emulator, "deleted", _spec(steps=[20, 100]))
    async with running_operator(emulator, platform.clients()):
        await wait_for("Shadow", lambda: status(emulator, "deleted").get("rollout", {}).get("studentArmReady"))
        from operator_fakes import GOOD

        platform.predictor.metrics = lambda backend: GOOD if backend.split.student_weight < 0.2 else FEW_LABELS
        await wait_for("the 20% step", lambda: platform.predictor.split.student_weight == 0.2)
        await delete_switch(emulator, "deleted")
        await wait_for("object gone", lambda: emulator.objects["crossadapt.io/v1alpha1/modelswitches", "ml",
                                                              "deleted"].deleted)
    assert platform.predictor.split.student_weight == 0.0
