"""`helm lint --strict` of the chart, alone and with each example values file."""

from __future__ import annotations

import pytest

from chart_harness import CHART, VALUES_FILES, helm, values_args


@pytest.mark.parametrize("name", sorted(VALUES_FILES))
def test_lint_strict_passes(name: str) -> None:
    done = helm("lint", "--strict", str(CHART), *values_args(VALUES_FILES[name]), check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 chart(s) failed" in done.stdout


def test_lint_strict_fails_on_a_bad_values_file(tmp_path) -> None:
    """The lint above can fail: a misspelt key is an error under --strict (values.schema.json)."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("predictor:\n  kserv: {enabled: true}\n")
    done = helm("lint", "--strict", str(CHART), "--values", str(bad), check=False)
    assert done.returncode != 0
    assert "kserv" in done.stdout + done.stderr


def test_chart_metadata() -> None:
    import yaml

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["name"] == "crossadapt"
    assert chart["kubeVersion"] == ">=1.27.0-0"  # native gRPC probes are GA from 1.27
    assert (CHART / "templates" / "NOTES.txt").is_file()
    assert (CHART / "crds" / "modelswitches.crossadapt.io.yaml").is_file(), "the operator's CRD ships in crds/"
