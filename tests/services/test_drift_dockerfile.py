"""services/drift_detector/Dockerfile: multi-stage, non-root, runs the drift-detector, gRPC health check; hadolint clean."""

from __future__ import annotations

from sampler_drift_fixtures import ROOT, dockerfile_problems, hadolint

DOCKERFILE = ROOT / "services" / "drift_detector" / "Dockerfile"


def test_drift_detector_dockerfile_is_multi_stage_and_non_root() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), "drift-detector", 50055) == []


def test_hadolint_is_clean() -> None:
    code, output = hadolint(DOCKERFILE)
    assert code == 0, output


def test_hadolint_catches_a_violation(tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    code, output = hadolint(bad)
    assert code != 0 and "DL3007" in output
