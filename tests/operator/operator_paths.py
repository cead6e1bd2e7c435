"""Where the operator's files live in the repository (a module of its own: every test folder has a conftest)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts" / "crossadapt" / "crds" / "modelswitches.crossadapt.io.yaml"
