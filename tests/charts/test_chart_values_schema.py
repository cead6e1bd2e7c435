"""values.schema.json: a typo or a bad type in a values file fails helm, and the schema covers every key.

Plus the cross-value checks of templates/validate.yaml, which fail `helm install` with what to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from chart_harness import CHART, HelmError, render

SCHEMA = json.loads((CHART / "values.schema.json").read_text())


def _template_error(tmp_path: Path, values_text: str) -> str:
    """helm template with a values file; the error it fails with (the test fails if it renders)."""
    path = tmp_path / "values.yaml"
    path.write_text(values_text)
    with pytest.raises(HelmError) as failure:
        render(extra_files=(path,))
    return str(failure.value)


BAD_VALUES = {
    "top-level typo": ("predictr:\n  enabled: false\n", "predictr"),
    "nested typo": ("services:\n  projector:\n    worker:\n      gpuz: 1\n", "gpuz"),
    "unknown service": ("services:\n  projecter:\n    enabled: true\n", "projecter"),
    "typo in a toleration": ("gpuPool:\n  tolerations: [{key: a, operater: Exists}]\n", "operater"),
    "typo in resources": ("predictor:\n  resources: {request: {cpu: 1}}\n", "request"),
    "string for integer": ("services:\n  sampler:\n    replicas: \"two\"\n", "replicas"),
    "float for integer": ("predictor:\n  gpus: 0.5\n", "gpus"),
    "bad port": ("services:\n  sampler:\n    grpcPort: 70000\n", "grpcPort"),
    "bad enum": ("image:\n  pullPolicy: Sometimes\n", "pullPolicy"),
    "bad quantity": ("redis:\n  persistence: {enabled: true, size: lots}\n", "size"),
    "bool as string": ("networkPolicy:\n  enabled: \"yes\"\n", "enabled"),
    "share above 1": ("predictor:\n  shadowShare: 1.5\n", "shadowShare"),
    "secret literal in env": (
        "services:\n  sampler:\n    extraEnv: [{name: WAREHOUSE_PASSWORD, value: hunter2}]\n", "extraEnv"),
    "env with value and valueFrom": (
        "services:\n  sampler:\n    extraEnv: [{name: A, value: x, valueFrom: {secretKeyRef: {name: s, key: k}}}]\n",
        "extraEnv"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_bad_values_fail_on_the_schema(tmp_path: Path, case: str) -> None:
    text, field = BAD_VALUES[case]
    error = _template_error(tmp_path, text)
    assert "values don't meet the specifications of the schema" in error, error
    assert field in error, error


def test_credentials_from_secrets_and_plain_settings_pass(tmp_path: Path) -> None:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump({"services": {"sampler": {"extraEnv": [
        {"name": "WAREHOUSE_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "warehouse", "key": "password"}}},
        {"name": "CROSSADAPT_TRAINING_LEASE_S", "value": "30"},
    ]}}}))
    r = render(extra_files=(path,))
    env = r.get("Deployment", "crossadapt-sampler")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "CROSSADAPT_TRAINING_LEASE_S", "value": "30"} in env
    assert any(e["name"] == "WAREHOUSE_PASSWORD" and "secretKeyRef" in e["valueFrom"] for e in env)


CROSS_VALUE_ERRORS = {
    "no object store": ("minio: {enabled: false}\n", "no object store"),
    "endpoint without secret": ("minio: {enabled: false}\ns3: {endpoint: 's3.example.com:443'}\n",
                                "s3.endpoint needs s3.existingSecret"),
    "both object stores": ("s3: {endpoint: 's3.example.com:443', existingSecret: s}\n", "minio.enabled=false"),
    "no broker": ("redis: {enabled: false}\n", "no broker"),
    "both brokers": ("externalRedis: {host: redis.example.com}\n", "redis.enabled=false"),
    "two standalone operators": ("operator: {replicas: 2}\n", "operator.peering.enabled=true"),
    "clusterwide with namespaces": ("operator: {clusterWide: true, watchNamespaces: [a]}\n", "watchNamespaces"),
    "predictor without teacher": ("predictor: {teacher: ''}\n", "teacher"),
}


@pytest.mark.parametrize("case", sorted(CROSS_VALUE_ERRORS))
def test_inconsistent_values_fail_with_what_to_change(tmp_path: Path, case: str) -> None:
    text, message = CROSS_VALUE_ERRORS[case]
    assert message in _template_error(tmp_path, text)


def _object_nodes(node: object, path: str = "#"):
    """Every schema node that describes an object, with its JSON pointer."""
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield path, node
        for key, value in node.items():
            yield from _object_nodes(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _object_nodes(value, f"{path}/{index}")


# Object nodes that are Kubernetes structures handed to the API server as they are (it validates them),
# and Helm's own `global`.
PASS_THROUGH = {
    "#/definitions/affinity/properties/nodeAffinity",
    "#/definitions/affinity/properties/podAffinity",
    "#/definitions/affinity/properties/podAntiAffinity",
    "#/properties/global",
}


def test_every_object_in_the_schema_is_closed() -> None:
    """additionalProperties is false at every level; free-form maps (labels, resources) type their values."""
    open_nodes = []
    for path, node in _object_nodes(SCHEMA):
        extra = node.get("additionalProperties")
        closed = extra is False or ("properties" not in node and isinstance(extra, dict) and extra)
        if not closed and path not in PASS_THROUGH:
            open_nodes.append(path)
    assert open_nodes == []
    assert SCHEMA["additionalProperties"] is False


def _schema_keys(schema: dict, node: dict, prefix: str = "") -> set[str]:
    if "$ref" in node:
        node = schema["definitions"][node["$ref"].rsplit("/", 1)[1]]
    keys = set()
    for key, child in (node.get("properties") or {}).items():
        keys.add(prefix + key)
        keys |= _schema_keys(schema, child, f"{prefix}{key}.")
    return keys


def _values_keys(values: object, prefix: str = "") -> set[str]:
    keys = set()
    if isinstance(values, dict):
        for key, child in values.items():
            keys.add(prefix + key)
            keys |= _values_keys(child, f"{prefix}{key}.")
    return keys


# Kubernetes structures and free-form maps: compared down to the key itself, not inside.
OPAQUE = {"nodeSelector", "podAnnotations", "labels", "affinity", "resources"}


def _cut(keys: set[str]) -> set[str]:
    return {k for k in keys if not any(part in OPAQUE for part in k.split(".")[:-1])}


def test_values_yaml_and_schema_name_the_same_keys() -> None:
    """Every documented default is in the schema, and the schema allows nothing values.yaml does not show."""
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    in_schema = _cut(_schema_keys(SCHEMA, SCHEMA) - {"global"})
    in_values = _cut(_values_keys(values))
    assert in_values - in_schema == set(), "in values.yaml, missing from the schema"
    assert in_schema - in_values == set(), "in the schema, missing from values.yaml (document every key)"
    assert len(in_values) > 150


def test_schema_is_the_json_schema_draft_helm_reads() -> None:
    import jsonschema

    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    # The example files are valid here too (helm itself checks them in test_chart_lint).
    validator = jsonschema.Draft7Validator(SCHEMA)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert list(validator.iter_errors(defaults)) == []
