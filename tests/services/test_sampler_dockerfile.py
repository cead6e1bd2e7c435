"""services/sampler/Dockerfile: multi-stage, non-root, runs the sampler, gRPC health check; hadolint clean."""

from __future__ import annotations

from sampler_drift_fixtures import ROOT, dockerfile_problems, hadolint

DOCKERFILE = ROOT / "services" / "sampler" / "Dockerfile"


def test_sampler_dockerfile_is_multi_stage_and_non_root() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text(), "sampler", 50052) == []


def test_the_checks_catch_a_root_image_without_health_check() -> None:
    found = dockerfile_problems('FROM python:3.11-slim\nUSER root\nCMD ["crossadapt", "serve", "projector"]\n',
                                "sampler", 50052)
    assert {"not multi-stage", "final stage runs as root", "no HEALTHCHECK"} <= set(found)
    assert any("crossadapt serve sampler" in f for f in found)


def test_hadolint_is_clean() -> None:
    code, output = hadolint(DOCKERFILE)
    assert code == 0, output
