"""Every rendered manifest is valid Kubernetes: kubernetes-validate --strict for built-in kinds (and the
ModelSwitch CRD), the projects' published CRD schemas for the KServe and Prometheus Operator resources.
"""

from __future__ import annotations

import copy

import kubernetes_validate
import pytest

from chart_harness import KUBE_VERSION, VALUES_FILES, Render, render
from custom_resources import custom_resource_errors, is_known


def _latest_kubernetes() -> str:
    from kubernetes_validate.utils import latest_version

    return latest_version()


# Kinds no published schema can check here, and why (each must be asserted, never silently skipped).
UNVALIDATED_KINDS = {
    ("kopf.dev/v1", "KopfPeering"): "kopf's peering CRD declares no spec schema (x-kubernetes-preserve-unknown-fields)",
    ("kopf.dev/v1", "ClusterKopfPeering"): "kopf's peering CRD declares no spec schema (x-kubernetes-preserve-unknown-fields)",
}


def validation_errors(r: Render, kube_version: str) -> list[str]:
    errors = []
    for doc in r.documents:
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        if is_known(doc):
            errors += [f"{where}: {e}" for e in custom_resource_errors(doc)]
            continue
        if (doc["apiVersion"], doc["kind"]) in UNVALIDATED_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, kube_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {'.'.join(str(p) for p in exc.path)}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: no schema: {exc.message}")
    return errors


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_every_render_is_valid_for_the_oldest_supported_kubernetes(renders: dict[str, Render], name: str) -> None:
    assert validation_errors(renders[name], KUBE_VERSION) == []


@pytest.mark.parametrize("name", ["default", "gpu"])
def test_render_is_valid_for_the_newest_kubernetes(renders: dict[str, Render], name: str) -> None:
    assert validation_errors(renders[name], _latest_kubernetes()) == []


def test_the_renders_cover_the_custom_resources_and_the_crd(renders: dict[str, Render]) -> None:
    """The schema paths above are exercised: the GPU values render the InferenceService and ServiceMonitor."""
    gpu = renders["gpu"]
    assert len(gpu.of_kind("InferenceService")) == 1
    assert len(gpu.of_kind("ServiceMonitor")) == 1
    crd = renders["default"].get("CustomResourceDefinition", "modelswitches.crossadapt.io")
    assert crd["apiVersion"] == "apiextensions.k8s.io/v1"


def test_strict_validation_catches_a_misspelt_field(default_render: Render) -> None:
    """The checks can fail: an unknown field in a Deployment, a bad type in an InferenceService."""
    deployment = copy.deepcopy(default_render.of_kind("Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)

    isvc = copy.deepcopy(render(("values-gpu.yaml",)).of_kind("InferenceService")[0])
    isvc["spec"]["predictor"]["minReplica"] = 1
    isvc["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    errors = custom_resource_errors(isvc)
    assert any("minReplica" in e for e in errors) and any("containerPort" in e for e in errors)


def test_kopf_peering_objects_are_skipped_with_a_reason() -> None:
    peering = render(values={"operator.peering.enabled": True, "operator.replicas": 2})
    kinds = {(d["apiVersion"], d["kind"]) for d in peering.documents}
    assert ("kopf.dev/v1", "KopfPeering") in kinds
    for key, reason in UNVALIDATED_KINDS.items():
        assert "no spec schema" in reason, key
    assert validation_errors(peering, KUBE_VERSION) == []
