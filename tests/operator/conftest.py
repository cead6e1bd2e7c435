"""Fixtures of the operator tests: the CRD, its schema, the fake platform, and a tiny switch's output."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

sys.path.insert(0, str(Path(__file__).parent))

from operator_fakes import Platform  # noqa: E402
from operator_paths import CRD_PATH  # noqa: E402


@pytest.fixture(scope="session")
def crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


@pytest.fixture(scope="session")
def open_api_schema(crd: dict[str, Any]) -> dict[str, Any]:
    return crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


@pytest.fixture(scope="session")
def tiny_switch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A `crossadapt switch` output of configs/switch-tiny.yaml (teacher/, student/, data/; seconds)."""
    from crossadapt.transfer.switch import load_switch_config, run_switch

    out = tmp_path_factory.mktemp("tiny-switch")
    run_switch(load_switch_config(Path(__file__).resolve().parents[2] / "configs" / "switch-tiny.yaml"), out)
    return out


@pytest.fixture
def platform() -> Platform:
    return Platform()
