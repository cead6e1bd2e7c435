"""Restricted Pod Security Standard: the checker is right on bad pods, and every rendered pod passes it.

The chart's pods also run with a read-only root filesystem (not part of the standard, but of the
chart's security baseline).
"""

from __future__ import annotations

import copy

import pytest

from chart_harness import VALUES_FILES, Render, containers, pod_template, render, workloads
from pod_security import restricted_violations

GOOD_POD = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{
        "name": "app", "image": "app:1",
        "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
    }],
    "volumes": [{"name": "tmp", "emptyDir": {}}],
}


def _with(change) -> dict:  # noqa: ANN001 - a function editing the pod in place
    pod = copy.deepcopy(GOOD_POD)
    change(pod)
    return pod


def _container(pod: dict) -> dict:
    return pod["containers"][0]["securityContext"]


def test_a_compliant_pod_has_no_finding() -> None:
    assert restricted_violations(GOOD_POD) == []


BAD_PODS = {
    "hostNetwork": (lambda p: p.update(hostNetwork=True), "hostNetwork"),
    "hostPID": (lambda p: p.update(hostPID=True), "hostPID"),
    "hostIPC": (lambda p: p.update(hostIPC=True), "hostIPC"),
    "privileged": (lambda p: _container(p).update(privileged=True), "privileged"),
    "hostPath": (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    "hostPort": (lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    "SYS_ADMIN": (lambda p: _container(p)["capabilities"].update(add=["SYS_ADMIN"]), "beyond the baseline"),
    "CHOWN added": (lambda p: _container(p)["capabilities"].update(add=["CHOWN"]), "only hold NET_BIND_SERVICE"),
    "no drop ALL": (lambda p: _container(p)["capabilities"].update(drop=["NET_RAW"]), "drop must include ALL"),
    "escalation unset": (lambda p: _container(p).pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
    "escalation true": (lambda p: _container(p).update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    "root allowed": (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    "container root": (lambda p: _container(p).update(runAsNonRoot=False), "runAsNonRoot"),
    "uid 0": (lambda p: _container(p).update(runAsUser=0), "runAsUser must not be 0"),
    "pod uid 0": (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser must not be 0"),
    "seccomp unset": (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile must be set"),
    "seccomp unconfined": (lambda p: _container(p).update(seccompProfile={"type": "Unconfined"}), "Unconfined"),
    "hostProcess": (lambda p: _container(p).update(windowsOptions={"hostProcess": True}), "hostProcess"),
    "procMount": (lambda p: _container(p).update(procMount="Unmasked"), "procMount"),
    "selinux user": (lambda p: _container(p).update(seLinuxOptions={"user": "root"}), "seLinuxOptions.user"),
    "selinux type": (lambda p: p["securityContext"].update(seLinuxOptions={"type": "spc_t"}), "seLinuxOptions.type"),
    "apparmor": (lambda p: _container(p).update(appArmorProfile={"type": "Unconfined"}), "appArmorProfile"),
    "unsafe sysctl": (lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
                      "kernel.msgmax"),
    "nfs volume": (lambda p: p["volumes"].append({"name": "n", "nfs": {"server": "x", "path": "/"}}), "nfs"),
    "bad init container": (lambda p: p.update(initContainers=[{"name": "init", "image": "i"}]), "initContainers[init]"),
}


@pytest.mark.parametrize("case", sorted(BAD_PODS))
def test_each_restricted_rule_catches_its_breach(case: str) -> None:
    change, expected = BAD_PODS[case]
    found = restricted_violations(_with(change))
    assert found, f"{case}: no finding"
    assert any(expected in finding for finding in found), found


def test_legacy_apparmor_annotation_is_checked() -> None:
    key = "container.apparmor.security.beta.kubernetes.io/app"
    assert restricted_violations(GOOD_POD, {key: "unconfined"})
    assert restricted_violations(GOOD_POD, {key: "runtime/default"}) == []


def _pods(r: Render) -> list[tuple[str, dict, dict]]:
    found = []
    for resource in workloads(r):
        pod = pod_template(resource)
        meta = resource["spec"]["template"]["metadata"] if "template" in resource.get("spec", {}) else {}
        found.append((f"{resource['kind']}/{resource['metadata']['name']}", pod, meta.get("annotations") or {}))
    return found


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_every_rendered_pod_meets_the_restricted_standard(renders: dict[str, Render], name: str) -> None:
    pods = _pods(renders[name])
    assert len(pods) >= 10
    findings = {where: restricted_violations(pod, annotations) for where, pod, annotations in pods}
    assert {where: f for where, f in findings.items() if f} == {}


def test_optional_workloads_meet_it_too() -> None:
    """Paths the example files leave out: a KServe predictor on CPU, a clusterwide peered operator."""
    r = render(("values-cpu-only.yaml",), values={"predictor.kserve.enabled": True, "operator.clusterWide": True,
                                                   "operator.peering.enabled": True, "operator.replicas": 2,
                                                   "redis.persistence.enabled": True})
    findings = {where: restricted_violations(pod, a) for where, pod, a in _pods(r)}
    assert "InferenceService/crossadapt" in findings
    assert {where: f for where, f in findings.items() if f} == {}


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_every_container_has_a_read_only_root_and_writes_only_to_volumes(renders: dict[str, Render],
                                                                       name: str) -> None:
    for where, pod, _ in _pods(renders[name]):
        volumes = {v["name"] for v in pod.get("volumes", [])}
        for container in containers(pod):
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, where
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert mounts.get("/tmp") in volumes, f"{where}: a read-only root needs a writable /tmp"
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            if "CROSSADAPT_HOME" in env:
                assert env["CROSSADAPT_HOME"].startswith("/tmp/"), where
