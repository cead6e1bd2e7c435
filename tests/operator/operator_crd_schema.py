"""The CRD's openAPIV3Schema as the API server uses it: structural checks, defaulting, and validation.

No API server runs here, so the three things it does with the schema are done in Python:
`structural_problems` applies Kubernetes' structural-schema rules, `apply_defaults` fills defaults as
the API server does on create, and `to_json_schema` turns the OpenAPI v3.0 dialect into a JSON Schema
that rejects unknown fields (as `kubectl apply` with server-side strict field validation does) so
`jsonschema` can validate objects. CEL rules (x-kubernetes-validations) are not evaluated here; the
operator's pydantic models enforce the same rules (tested against them).
"""

from __future__ import annotations

import copy
from typing import Any

ALLOWED_KEYS = {"type", "description", "properties", "required", "items", "enum", "default", "minimum", "maximum",
                "exclusiveMinimum", "exclusiveMaximum", "minItems", "maxItems", "minLength", "maxLength", "pattern",
                "format", "additionalProperties", "nullable", "x-kubernetes-validations", "x-kubernetes-list-type",
                "x-kubernetes-list-map-keys", "x-kubernetes-preserve-unknown-fields", "title"}


def walk(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    found = [(path or ".", node)]
    for name, child in (node.get("properties") or {}).items():
        found += walk(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        found += walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        found += walk(node["additionalProperties"], f"{path}{{}}")
    return found


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """Violations of Kubernetes' structural-schema rules (kubernetes.io/docs/tasks/extend-kubernetes/
    custom-resources/custom-resource-definitions/#specifying-a-structural-schema)."""
    problems = []
    for path, node in walk(schema):
        if "type" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if node.get("type") == "array" and "items" not in node:
            problems.append(f"{path}: array without items")
        unknown = set(node) - ALLOWED_KEYS
        if unknown:
            problems.append(f"{path}: keys a CRD schema does not allow: {sorted(unknown)}")
        if any(k in node for k in ("$ref", "allOf", "oneOf", "anyOf", "not")):
            problems.append(f"{path}: logical junctors or refs")
    return problems


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """`value` with the schema's defaults filled in, as the API server defaults an object."""
    if not isinstance(value, dict) or schema.get("type") != "object":
        if isinstance(value, list) and isinstance(schema.get("items"), dict):
            return [apply_defaults(schema["items"], item) for item in value]
        return value
    result = dict(value)
    for name, child in (schema.get("properties") or {}).items():
        if name not in result and "default" in child:
            result[name] = copy.deepcopy(child["default"])
        if name in result:
            result[name] = apply_defaults(child, result[name])
    return result


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI v3.0 (Kubernetes dialect) → JSON Schema draft 2020-12, unknown fields rejected."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("description", "default", "exclusiveMinimum",
                                                       "exclusiveMaximum"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(child) for name, child in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = to_json_schema(value)
        else:
            out[key] = value
    if node.get("exclusiveMinimum") is True:
        out["exclusiveMinimum"] = out.pop("minimum")
    if node.get("exclusiveMaximum") is True:
        out["exclusiveMaximum"] = out.pop("maximum")
    if node.get("type") == "object" and "properties" in node and not node.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    if node.get("x-kubernetes-list-type") == "set":
        out["uniqueItems"] = True
    return out


def validator(schema: dict[str, Any]) -> Any:
    import jsonschema

    return jsonschema.Draft202012Validator(to_json_schema(schema), format_checker=jsonschema.FormatChecker())


def errors(schema: dict[str, Any], obj: dict[str, Any]) -> list[str]:
    """What the API server would reject in `obj` (after defaulting), as 'path: message' lines."""
    defaulted = apply_defaults(schema, obj)
    return sorted(f"{'.'.join(str(p) for p in e.absolute_path)}: {e.message}"
                  for e in validator(schema).iter_errors(defaulted))
