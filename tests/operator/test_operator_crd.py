"""The ModelSwitch CRD: a valid, structural CRD whose schema admits the examples and rejects bad objects,
and which the operator's pydantic models mirror field for field (names, defaults, enums, rules)."""

from __future__ import annotations

import copy
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from operator_paths import CRD_PATH, ROOT
from operator_crd_schema import apply_defaults, errors, structural_problems, walk
from operators.modelswitch.crd import ACTION_ANNOTATION, GROUP, KIND, PLURAL, SHORT_NAME, VERSION, Phase
from operators.modelswitch.models import ARCHITECTURES, ModelSwitchSpec, ModelSwitchStatus

EXAMPLES = sorted((ROOT / "operators" / "examples").glob("*.yaml"))


def _kubernetes_validate(path: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).parent / "kubernetes-validate"
    return subprocess.run([str(binary), "--strict", str(path)], capture_output=True, text=True, timeout=120)


def test_crd_is_valid_per_kubernetes_validate_strict() -> None:
    result = _kubernetes_validate(CRD_PATH)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validate_catches_a_misspelt_crd_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad-crd.yaml"
    bad.write_text(CRD_PATH.read_text().replace("shortNames: [msw]", "shortName: [msw]"))
    assert _kubernetes_validate(bad).returncode != 0


def test_crd_names_and_shape(crd: dict[str, Any]) -> None:
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"{PLURAL}.{GROUP}"
    assert (spec["group"], spec["names"]["kind"], spec["names"]["plural"]) == (GROUP, KIND, PLURAL)
    assert spec["names"]["shortNames"] == [SHORT_NAME] and spec["scope"] == "Namespaced"
    (version,) = spec["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Phase"] == ".status.phase" and columns["Student %"] == ".status.studentPercent"
    assert columns["ΔAUC"] == ".status.gate.deltaAuc.estimate"
    assert columns["ΔLogLoss"] == ".status.gate.deltaLogLoss.estimate"
    assert columns["Age"] == ".metadata.creationTimestamp"
    assert [c["name"] for c in version["additionalPrinterColumns"]][:5] == ["Phase", "Student %", "ΔAUC",
                                                                           "ΔLogLoss", "Age"]


def test_schema_is_structural(open_api_schema: dict[str, Any]) -> None:
    assert structural_problems(open_api_schema) == []


def test_the_structural_check_catches_violations() -> None:
    bad = {"type": "object", "properties": {"a": {"properties": {}}, "b": {"type": "array"}, "c": {
        "type": "object", "properties": {}, "additionalProperties": {"type": "string"}}}}
    found = "\n".join(structural_problems(bad))
    assert ".a: no type" in found and ".b: array without items" in found and ".c: properties and" in found


def test_printer_column_paths_exist_in_the_schema(crd: dict[str, Any], open_api_schema: dict[str, Any]) -> None:
    paths = {path for path, _ in walk(open_api_schema)}
    for column in crd["spec"]["versions"][0]["additionalPrinterColumns"]:
        if column["jsonPath"].startswith(".status"):
            assert column["jsonPath"] in paths, column


def test_every_default_is_valid_against_its_own_schema(open_api_schema: dict[str, Any]) -> None:
    """The API server refuses a CRD whose defaults its schema rejects; check each default in place."""
    for path, node in walk(open_api_schema):
        if "default" in node:
            assert errors(node, copy.deepcopy(node["default"])) == [], path


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate(example: Path, open_api_schema: dict[str, Any]) -> None:
    obj = yaml.safe_load(example.read_text())
    assert obj["apiVersion"] == f"{GROUP}/{VERSION}" and obj["kind"] == KIND
    assert errors(open_api_schema, obj) == []
    ModelSwitchSpec.model_validate(obj["spec"])  # and the operator reads them


def _minimal() -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": {"name": "m"},
            "spec": {"teacher": {"checkpoint": "ctr/mlp"}, "student": {"architecture": "fibinet", "embeddingDim": 16},
                     "data": {"train": "ctr/train", "stream": "ctr/stream"}}}


def _with(path: str, value: Any) -> dict[str, Any]:
    obj = _minimal()
    node = obj
    *parents, leaf = path.split(".")
    for name in parents:
        node = node.setdefault(name, {})
    node[leaf] = value
    return obj


BAD = [
    ("unknown top-level spec field", "spec.rollbackPolicy", "Never", "Additional properties"),
    ("misspelt gate", "spec.rollout.gates", {"maxAUCDrop": 0.001}, "Additional properties"),
    ("unknown architecture", "spec.student.architecture", "transformer", "is not one of"),
    ("zero width", "spec.student.embeddingDim", 0, "less than the minimum"),
    ("width as a string", "spec.student.embeddingDim", "16", "is not of type 'integer'"),
    ("sampling ratio above 1", "spec.offline.sampling.ratio", 1.5, "greater than the maximum"),
    ("sampling ratio of 0", "spec.offline.sampling.ratio", 0, "less than or equal to the minimum"),
    ("positive ratio of 1", "spec.offline.sampling.positiveRatio", 1.0, "greater than or equal to the maximum"),
    ("negative λ", "spec.offline.distillation.lambda", -0.1, "less than the minimum"),
    ("zero temperature", "spec.offline.distillation.temperature", 0, "less than or equal to the minimum"),
    ("unknown drift metric", "spec.online.drift.metric", "hellinger", "is not one of"),
    ("one drift window", "spec.online.drift.windows", 1, "less than the minimum"),
    ("step above 100%", "spec.rollout.steps", [5, 150], "greater than the maximum"),
    ("no steps", "spec.rollout.steps", [], "should be non-empty"),
    ("a step repeated", "spec.rollout.steps", [5, 5, 100], "non-unique"),
    ("unknown strategy", "spec.rollout.strategy", "Canary", "is not one of"),
    ("AUC drop above 1", "spec.rollout.gates.maxAucDrop", 2, "greater than the maximum"),
    ("zero minLabels", "spec.rollout.gates.minLabels", 0, "less than the minimum"),
    ("cohort key with a space", "spec.rollout.cohortKey", "user id", "does not match"),
    ("zero timeout", "spec.rollout.timeouts.stepSeconds", 0, "less than the minimum"),
    ("paused as a string", "spec.paused", "yes", "is not of type 'boolean'"),
    ("checkpoint URL", "spec.teacher.checkpoint", "s3://models/ctr/mlp/", "does not match"),
    ("bad version", "spec.teacher.version", "3", "does not match"),
    ("rolling as a string", "spec.online.drift.rolling", "true", "is not of type 'boolean'"),
    ("one row per rolling window", "spec.online.drift.windowRows", 1, "less than the minimum"),
    ("rolling window beyond int32", "spec.online.drift.windowRows", 2**31, "greater than the maximum"),
    ("unknown drift field", "spec.online.drift.windowSize", 1000, "Additional properties"),
    ("unknown collaborative field", "spec.online.collaborative", {"mu": 1.0}, "Additional properties"),
    ("collaborative as a boolean", "spec.online.collaborative", True, "is not of type 'object'"),
    ("zero collaborative weight", "spec.online.collaborative.weight", 0, "less than or equal to the minimum"),
    ("negative collaborative temperature", "spec.online.collaborative.temperature", -1,
     "less than or equal to the minimum"),
    ("the student's gate for the teacher", "spec.online.collaborative.gate", "teacher_better", "is not one of"),
    ("scaleByT2 as a string", "spec.online.collaborative.scaleByT2", "yes", "is not of type 'boolean'"),
    ("the teacher's gate for the student", "spec.offline.distillation.kdGate", "student_better", "is not one of"),
    ("unknown status phase", "status.phase", "Deploying", "is not one of"),
    ("student share above 100", "status.studentPercent", 120, "greater than the maximum"),
]


@pytest.mark.parametrize(("case", "path", "value", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_objects_are_rejected(case: str, path: str, value: Any, message: str,
                                  open_api_schema: dict[str, Any]) -> None:
    found = errors(open_api_schema, _with(path, value))
    assert found and any(message in e for e in found), (case, found)


def test_missing_required_fields_are_rejected(open_api_schema: dict[str, Any]) -> None:
    obj = _minimal()
    del obj["spec"]["data"]["stream"], obj["spec"]["student"]["architecture"]
    found = errors(open_api_schema, obj)
    assert any("'stream' is a required property" in e for e in found)
    assert any("'architecture' is a required property" in e for e in found)


# ------------------------------------------------------------------------ CRD ⟷ pydantic models


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside an annotation (`X`, `X | None`, `list[X]`), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for argument in typing.get_args(annotation):
        if (inner := _model_of(argument)) is not None:
            return inner
    return None


def _compare(model: type[BaseModel], node: dict[str, Any], path: str) -> list[str]:
    problems = []
    aliases = {field.alias or name: field for name, field in model.model_fields.items()}
    properties = node.get("properties") or {}
    if set(aliases) != set(properties):
        problems.append(f"{path}: model {sorted(set(aliases) - set(properties))} vs "
                        f"CRD {sorted(set(properties) - set(aliases))}")
    for alias, field in aliases.items():
        inner = _model_of(field.annotation)
        if inner is not None and alias in properties:
            child = properties[alias]
            problems += _compare(inner, child.get("items", child) if child.get("type") == "array" else child,
                                 f"{path}.{alias}")
    return problems


def test_spec_model_has_exactly_the_crd_fields(open_api_schema: dict[str, Any]) -> None:
    assert _compare(ModelSwitchSpec, open_api_schema["properties"]["spec"], "spec") == []


def test_status_model_has_exactly_the_crd_fields(open_api_schema: dict[str, Any]) -> None:
    assert _compare(ModelSwitchStatus, open_api_schema["properties"]["status"], "status") == []


@pytest.mark.parametrize("online", [None, {"collaborative": {}}, {"collaborative": {"gate": "gap"}}],
                         ids=["minimal", "empty collaborative", "collaborative gate"])
def test_crd_defaults_equal_the_model_defaults(online: dict[str, Any] | None, open_api_schema: dict[str, Any]) -> None:
    """A spec the API server defaulted reads the same as one the operator defaults itself (an optional
    section such as online.collaborative stays absent in both, and present gets the same defaults)."""
    spec_schema = open_api_schema["properties"]["spec"]
    minimal = {**_minimal()["spec"], **({"online": online} if online is not None else {})}
    by_server = apply_defaults(spec_schema, minimal)
    by_model = ModelSwitchSpec.model_validate(minimal).model_dump(by_alias=True, exclude_none=True)
    assert by_model == by_server
    assert ("collaborative" in by_server["online"]) == (online is not None)


def test_the_switch_options_are_accepted(open_api_schema: dict[str, Any]) -> None:
    """The switch's rolling drift, collaborative teacher and KD gate, each spelt out, pass both checks."""
    obj = _minimal()
    obj["spec"]["offline"] = {"distillation": {"kdGate": "all"}}
    obj["spec"]["online"] = {"drift": {"rolling": True, "windowRows": 2},
                             "collaborative": {"weight": 0.5, "temperature": 2, "gate": "all", "scaleByT2": False}}
    assert errors(open_api_schema, obj) == []
    spec = ModelSwitchSpec.model_validate(obj["spec"])
    assert (spec.offline.distillation.kd_gate, spec.online.drift.rolling, spec.online.drift.window_rows) == (
        "all", True, 2)
    assert spec.online.collaborative is not None and spec.online.collaborative.scale_by_t2 is False


def test_the_switch_options_have_the_cores_defaults_and_ranges(open_api_schema: dict[str, Any]) -> None:
    """The new fields default and range as the core's switch config does (crossadapt.transfer.switch_config's
    DriftSection / DistillationSection, crossadapt.transfer.online.collaborative.CollaborativeConfig)."""
    from crossadapt.transfer.online.collaborative import CollaborativeConfig
    from crossadapt.transfer.switch_config import DistillationSection, DriftSection, OfflineSection

    spec = open_api_schema["properties"]["spec"]["properties"]
    drift = spec["online"]["properties"]["drift"]["properties"]
    collaborative = spec["online"]["properties"]["collaborative"]["properties"]
    kd_gate = spec["offline"]["properties"]["distillation"]["properties"]["kdGate"]
    assert (drift["rolling"]["default"], drift["windowRows"]["default"]) == (
        DriftSection().rolling, DriftSection().window_rows)
    assert kd_gate["default"] == DistillationSection().kd_gate
    assert spec["offline"]["properties"]["reuseTeacherNetwork"]["default"] == OfflineSection().reuse_teacher_network
    assert typing.get_args(DistillationSection.model_fields["kd_gate"].annotation) == tuple(kd_gate["enum"])
    core = CollaborativeConfig()
    assert {name: node["default"] for name, node in collaborative.items()} == {
        "weight": core.weight, "temperature": core.temperature, "gate": core.gate, "scaleByT2": core.scale_by_t2}
    assert set(typing.get_args(CollaborativeConfig.model_fields["gate"].annotation)) == set(
        collaborative["gate"]["enum"])
    # The lower bounds: the core refuses what the CRD refuses, and takes the smallest value the CRD takes.
    with pytest.raises(ValidationError):
        DriftSection(window_rows=drift["windowRows"]["minimum"] - 1)
    DriftSection(rolling=True, window_rows=drift["windowRows"]["minimum"])
    for name in ("weight", "temperature"):
        assert collaborative[name]["exclusiveMinimum"] is True and collaborative[name]["minimum"] == 0
        with pytest.raises(ValidationError):
            CollaborativeConfig(**{name: 0.0})


def test_enums_agree(open_api_schema: dict[str, Any]) -> None:
    status = open_api_schema["properties"]["status"]["properties"]
    assert status["phase"]["enum"] == [p.value for p in Phase]
    student = open_api_schema["properties"]["spec"]["properties"]["student"]["properties"]
    assert tuple(student["architecture"]["enum"]) == ARCHITECTURES
    assert typing.get_args(ModelSwitchSpec.model_fields["student"].annotation.model_fields["architecture"]
                           .annotation) == ARCHITECTURES


def test_architectures_are_the_core_registry() -> None:
    """The core's typed model configs (crossadapt/models/config.py) name the same architectures; read
    from the source, since importing the core package loads torch."""
    import ast

    tree = ast.parse((ROOT / "crossadapt" / "models" / "config.py").read_text())
    names = {node.value.value for node in ast.walk(tree)
             if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
             and node.target.id == "architecture" and isinstance(node.value, ast.Constant)}
    assert names == set(ARCHITECTURES)


@pytest.mark.parametrize(("case", "change", "message"), [
    ("steps not increasing", {"rollout": {"steps": [50, 25]}}, "increase strictly"),
    ("thetaLow above thetaHigh", {"online": {"drift": {"thetaLow": 0.1, "thetaHigh": 0.05}}}, "thetaLow"),
    ("no epochs", {"offline": {"distillation": {"frozenEpochs": 0, "jointEpochs": 0}}}, "at least 1"),
    # collaboration trains the teacher online (the core's co_evolution); without the online stage nothing would
    ("collaborative without the online stage", {"online": {"enabled": False, "collaborative": {}}},
     "collaborative trains the teacher"),
    ("rolling drift without the online stage", {"online": {"enabled": False, "drift": {"rolling": True}}},
     "rolling re-estimates"),
])
def test_models_enforce_the_crd_cel_rules(case: str, change: dict[str, Any], message: str,
                                          open_api_schema: dict[str, Any]) -> None:
    """The CEL rules (x-kubernetes-validations) the API server evaluates, checked by the operator too."""
    spec = {**_minimal()["spec"], **change}
    with pytest.raises(ValidationError, match=message):
        ModelSwitchSpec.model_validate(spec)
    rules = [rule["rule"] for _, node in walk(open_api_schema) for rule in node.get("x-kubernetes-validations", [])]
    assert rules == ["self.frozenEpochs + self.jointEpochs >= 1", "self.enabled || !has(self.collaborative)",
                     "self.enabled || !self.drift.rolling", "self.thetaLow < self.thetaHigh", "self.isSorted()"]


def test_action_annotation_is_in_the_crossadapt_domain() -> None:
    assert ACTION_ANNOTATION == "crossadapt.io/action"
