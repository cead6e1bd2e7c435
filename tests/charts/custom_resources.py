"""Validate custom resources the way the API server would, from their CRDs' openAPIV3Schema.

kubernetes-validate knows only the built-in kinds. For the chart's custom resources (the KServe
InferenceService, the Prometheus Operator ServiceMonitor) the schemas their projects publish are
vendored under `schemas/` (see its README). An OpenAPI v3 structural schema becomes a JSON schema
with two changes that mirror the API server: objects reject unknown fields unless the schema
preserves them (strict field validation, kubectl's default), and `nullable: true` admits null.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

SCHEMAS = Path(__file__).parent / "schemas"

# (apiVersion, kind) -> vendored openAPIV3Schema
CUSTOM_RESOURCE_SCHEMAS = {
    ("serving.kserve.io/v1beta1", "InferenceService"): SCHEMAS / "kserve-inferenceservice-v1beta1.json.gz",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-v1.json",
}


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: _strict(value) for key, value in node.items()}
    if out.get("nullable") is True and "type" in out:
        out["type"] = [out["type"], "null"]
    preserves = out.get("x-kubernetes-preserve-unknown-fields") is True
    if out.get("type") == "object" and "properties" in out and "additionalProperties" not in out and not preserves:
        out["additionalProperties"] = False
    return out


def _read(path: Path) -> dict:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    return json.loads(raw)


@lru_cache(maxsize=None)
def validator(api_version: str, kind: str) -> jsonschema.protocols.Validator:
    schema = _strict(_read(CUSTOM_RESOURCE_SCHEMAS[(api_version, kind)]))
    # A custom resource's metadata is ObjectMeta; its schema only says "object". Check what matters here.
    schema["properties"]["metadata"] = {
        "type": "object", "required": ["name"],
        "properties": {"name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                       "namespace": {"type": "string"},
                       "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                       "annotations": {"type": "object", "additionalProperties": {"type": "string"}}},
    }
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema.setdefault("required", [])
    schema["required"] = sorted({*schema["required"], "apiVersion", "kind", "metadata", "spec"})
    # OpenAPI v3.0 schemas follow JSON Schema draft 4 (boolean exclusiveMinimum and friends).
    return jsonschema.Draft4Validator(schema)


def is_known(resource: dict) -> bool:
    return (resource.get("apiVersion"), resource.get("kind")) in CUSTOM_RESOURCE_SCHEMAS


def custom_resource_errors(resource: dict) -> list[str]:
    """Every schema error of a custom resource, as 'path: message' lines."""
    found = validator(resource["apiVersion"], resource["kind"]).iter_errors(resource)
    return [f"{'.'.join(str(p) for p in error.absolute_path)}: {error.message}" for error in found]
