"""operators/rbac.yaml grants exactly what the operator does with the Kubernetes API.

The operator runs against the emulator through a whole switch, an annotation, a deletion (and,
for the peering role, with kopf peering on); every request it made is turned into the RBAC rule
(apiGroup, resource, verb) it needs, and the set must equal the role's rules: nothing missing,
nothing more.
"""

from __future__ import annotations

from pathlib import Path

import kmock
import pytest
import yaml

from operator_paths import ROOT
from operator_fakes import FEW_LABELS, GOOD, Platform
from operator_harness import (
    Emulator,
    add_switch,
    declare_resources,
    delete_switch,
    operator_requests,
    patch_switch,
    phase_is,
    running_operator,
    status,
    wait_for,
)

pytestmark = [pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(120)]

RBAC = ROOT / "operators" / "rbac.yaml"
Rule = tuple[str, str, str]  # (apiGroup, resource[/subresource], verb)


def granted(role_name: str, path: Path = RBAC) -> set[Rule]:
    roles = {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(path.read_text())}
    return {(group, resource, verb) for rule in roles[role_name]["rules"] for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}


def needed(requests: list) -> set[Rule]:
    """The RBAC rule each API request needs (discovery URLs need none: system:discovery grants them)."""
    rules = set()
    for request in requests:
        resource = request.resource
        if resource is None or resource.plural is None:
            continue  # /api, /apis, /apis/GROUP/VERSION: discovery
        plural = f"{resource.plural}/{request.subresource}" if request.subresource else resource.plural
        if request.action == kmock.action.WATCH:
            verb = "watch"
        elif request.action == kmock.action.LIST:
            verb = "list"
        else:
            verb = {"GET": "get", "POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}[
                request.method.value]
        rules.add((resource.group, plural, verb))
    return rules


@pytest.fixture
def emulator(kmock: Emulator) -> Emulator:
    declare_resources(kmock)
    return kmock


@pytest.mark.asyncio
async def test_the_operator_needs_exactly_its_role(emulator: Emulator, platform: Platform) -> None:
    platform.predictor.metrics = lambda backend: FEW_LABELS
    add_switch(emulator, "promoted")
    add_switch(emulator, "deleted")
    async with running_operator(emulator, platform.clients()):
        # Both must be shadow-scoring: a promote that arrives earlier is ignored by design (PromoteIgnored).
        for name in ("deleted", "promoted"):
            await wait_for(f"{name}: shadow",
                           lambda name=name: status(emulator, name).get("rollout", {}).get("studentArmReady"))
        await patch_switch(emulator, "promoted", {"metadata": {"annotations": {"crossadapt.io/action": "promote"}}})
        await wait_for("promoted", phase_is(emulator, "promoted", "Promoted"))
        await delete_switch(emulator, "deleted")
        await wait_for("deleted", lambda: emulator.objects["crossadapt.io/v1alpha1/modelswitches", "ml",
                                                           "deleted"].deleted)
    used = needed(operator_requests(emulator))
    assert used == granted("crossadapt-operator")


@pytest.mark.asyncio
async def test_peering_needs_exactly_the_peering_role(emulator: Emulator, platform: Platform) -> None:
    emulator.resources["kopf.dev/v1/kopfpeerings"] = kmock.ResourceInfo(
        kind="KopfPeering", singular="kopfpeering", namespaced=True, verbs={"get", "list", "watch", "patch"})
    emulator.objects["kopf.dev/v1/kopfpeerings", "ml", "crossadapt"] = {
        "apiVersion": "kopf.dev/v1", "kind": "KopfPeering",
        "metadata": {"name": "crossadapt", "namespace": "ml", "resourceVersion": "1"}, "status": {}}
    platform.predictor.metrics = lambda backend: GOOD
    add_switch(emulator, "peered")
    async with running_operator(emulator, platform.clients(), peering="crossadapt"):
        await wait_for("promoted", phase_is(emulator, "peered", "Promoted"), timeout=40)
    used = needed(operator_requests(emulator))
    peering = {rule for rule in used if rule[0] == "kopf.dev"}
    assert peering, "kopf made no peering requests: the test does not exercise peering"
    # The same verbs on the cluster-wide kind, which `--all-namespaces` peering uses.
    cluster_wide = {(group, "clusterkopfpeerings", verb) for group, _, verb in peering}
    assert peering | cluster_wide == granted("crossadapt-operator-peering")
    assert used - peering <= granted("crossadapt-operator")


def test_rbac_manifest_is_valid() -> None:
    import subprocess
    import sys

    binary = Path(sys.executable).parent / "kubernetes-validate"
    result = subprocess.run([str(binary), "--strict", str(RBAC)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_comparison_catches_a_missing_or_extra_rule(tmp_path: Path) -> None:
    text = RBAC.read_text().replace("verbs: [list, watch, patch]\n  - apiGroups: [crossadapt.io]",
                                    "verbs: [list, watch, patch, delete]\n  - apiGroups: [crossadapt.io]", 1)
    (tmp_path / "rbac.yaml").write_text(text)
    assert ("crossadapt.io", "modelswitches", "delete") in granted("crossadapt-operator", tmp_path / "rbac.yaml")
    assert granted("crossadapt-operator", tmp_path / "rbac.yaml") != granted("crossadapt-operator")
