"""`crossadapt rollout`: a tiny switch's student rolled out against a real predictor on loopback.

One tiny switch (configs/switch-tiny.yaml, seconds; the `tiny_switch` fixture) gives the teacher, the
student and the test split.
The good student is promoted; a broken one (its weights permuted, so its scores are noise) is rolled
back by its gate. The gate checks a rollout records are then fed, one per pass, to the operator's
own reconcile: it must take the same steps to the same end.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from operator_driver import Driver
from operator_fakes import Platform
from operators.local_rollout.report import serving_sentence
from operators.local_rollout.rollout import GateCheck, RolloutResult
from operators.modelswitch.decisions import UNKNOWN, Interval, PairedMetrics
from operators.modelswitch.models import RolloutSpec

ROOT = Path(__file__).resolve().parents[2]
#: A replay of the tiny test split (2000 rows): gates a few hundred rows can decide.
ROLLOUT = {"steps": [10, 50, 100], "timeouts": {"shadowSeconds": 2_592_000, "stepSeconds": 2_592_000},
           "gates": {"minLabels": 250, "maxAucDrop": 0.05, "maxLogLossRise": 0.05, "maxCalibrationBias": 0.3}}


@pytest.fixture(scope="module")
def broken_student(tiny_switch: Path) -> Path:
    """The student with every weight tensor's values shuffled: same architecture, scores unrelated to clicks."""
    from crossadapt.checkpoint import load_checkpoint, save_checkpoint

    loaded = load_checkpoint(tiny_switch / "student")
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for parameter in loaded.model.parameters():
            flat = parameter.view(-1)
            flat.copy_(flat[torch.randperm(flat.numel(), generator=generator)])
    folder = tiny_switch / "broken-student"
    save_checkpoint(folder, loaded.model, feature_spec=loaded.manifest.feature_spec,
                    vocab_hash=loaded.manifest.vocab_hash, overwrite=True)
    return folder


def _dataset(run_dir: Path):  # noqa: ANN202
    from crossadapt.data.prepared import PreparedDataset

    return PreparedDataset.open(next((run_dir / "data").glob("*/dataset.json")).parent)


@pytest.fixture(scope="module")
def promoted(tiny_switch: Path) -> str:
    """`crossadapt rollout` on the tiny switch (its stdout); rollout.json etc. land in the switch's folder."""
    config = tiny_switch / "rollout.yaml"
    config.write_text(json.dumps(ROLLOUT))  # YAML is a superset of JSON
    (tiny_switch / "report.md").write_text("# Switch report\n")
    command = [sys.executable, "-c", "from crossadapt.cli import main; main()", "rollout", str(tiny_switch),
               "--config", str(config), "--label-delay-s", "600", "--batch-rows", "64"]
    env = {**os.environ, "PYTHONPATH": str(_without_platform_only_packages(tiny_switch / "hooks"))}
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


#: Installed here for the other tests, but not by `scripts/bootstrap predictor` (what scripts/demo installs):
#: the platform extra's own packages and the test extra's.
PLATFORM_ONLY = ("celery", "kombu", "minio", "kopf", "redis", "sklearn", "scipy", "kubernetes_validate", "jsonschema",
                 "hypothesis", "kmock", "pytest")


def _without_platform_only_packages(folder: Path) -> Path:
    """A sitecustomize that makes those imports fail in the CLI and the predictor it starts."""
    folder.mkdir(exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import sys\n"
        "class _Refuse:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        f"        if name.split('.')[0] in {PLATFORM_ONLY!r}:\n"
        "            raise ImportError(f'{name} is not installed by scripts/bootstrap predictor')\n"
        "sys.meta_path.insert(0, _Refuse())\n")
    return folder


def test_the_cli_promotes_a_good_student(tiny_switch: Path, promoted: str) -> None:
    assert "Promoted" in promoted and "Shadow" in promoted
    result = json.loads((tiny_switch / "rollout.json").read_text())
    assert result["outcome"] == "Promoted" and result["reason"] == "Promoted"
    assert [s["student_percent"] for s in result["step_summaries"]] == [0, 10, 50, 100]
    for step in result["step_summaries"]:  # each step advanced on its own window with enough labels
        assert step["verdict"] == "Advance" and step["paired_rows"] >= 250
        assert step["delta_auc"]["lower"] >= -0.05 and step["delta_logloss"]["upper"] <= 0.05
        assert step["delta_auc"]["lower"] <= step["delta_auc"]["estimate"] <= step["delta_auc"]["upper"]
    # The promotion as the operator makes it: the student on the serving (teacher) arm, all traffic there.
    assert result["serving_checkpoint"] == result["student"] == "rollout/student/v000001"
    assert result["final_student_weight"] == 0.0
    assert result["labelled_rows"] == result["rows_sent"] <= 2000
    assert (tiny_switch / "rollout.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (tiny_switch / "rollout.md").read_text()
    assert "**Promoted**" in markdown and "| Canary 3 | 100% |" in markdown
    # After a promotion the student is on the serving arm: the sentence must say so, not read as a loss.
    assert ("Afterwards: the predictor serves `rollout/student/v000001` (the promoted student) on its serving arm "
            "with 100% of traffic, 0% on the student arm.") in markdown
    report = (tiny_switch / "report.md").read_text()
    assert report.startswith("# Switch report") and report.count("## Rollout") == 1 and "rollout.png" in report


def test_a_broken_student_is_rolled_back_by_its_gate(tiny_switch: Path, broken_student: Path,
                                                     tmp_path: Path) -> None:
    from operators.local_rollout.cli import local_rollout

    result = local_rollout(_dataset(tiny_switch), tiny_switch / "teacher", broken_student,
                           RolloutSpec.model_validate(ROLLOUT), workdir=tmp_path, label_delay_s=600, batch_rows=64,
                           bootstrap_replicates=50)
    assert result.outcome == "RolledBack" and result.reason == "GateBreached", result.message
    last = result.checks[-1]
    assert last.verdict == "RollBack" and last.delta_auc["upper"] < -0.05  # the interval shows the breach
    assert all(check.student_percent == 0 for check in result.checks)  # it never got past Shadow
    assert result.final_student_weight == 0.0 and result.serving_checkpoint == result.teacher
    assert serving_sentence(result) == (f"the predictor serves {result.teacher} on its serving arm with 100% of "
                                        "traffic, 0% on the student arm")
    assert result.rows_sent < 2000  # it stopped as soon as the gate saw the breach


def _metrics(check: GateCheck) -> PairedMetrics:
    def interval(figures: dict) -> Interval:
        if figures["estimate"] is None:
            return UNKNOWN
        return Interval(*(math.nan if figures[k] is None else figures[k] for k in ("estimate", "lower", "upper")))

    return PairedMetrics(check.paired_rows, interval(check.delta_auc), interval(check.delta_logloss),
                         interval(check.student_pcoc), interval(check.teacher_pcoc))


def _from_json(path: Path) -> RolloutResult:
    raw = json.loads(path.read_text())
    raw.pop("step_summaries")
    raw["checks"] = [GateCheck(**check) for check in raw["checks"]]
    return RolloutResult(**raw)


def test_the_operator_decides_the_same_steps(tiny_switch: Path, promoted: str, open_api_schema: dict) -> None:
    """The recorded windows, served one per reconcile pass, take the operator down the same ladder."""
    local = _from_json(tiny_switch / "rollout.json")
    driver = Driver(Platform(), open_api_schema)
    driver.spec["rollout"] = RolloutSpec.model_validate(ROLLOUT).model_dump(by_alias=True)
    driver.run_until("Shadow")
    driver.tick()  # the pass that puts the student on its arm at 0%
    assert driver.status["rollout"]["studentArmReady"]
    taken = []
    for check in local.checks:
        driver.platform.predictor.metrics = lambda backend, metrics=_metrics(check): metrics
        driver.tick()
        taken.append((driver.phase, driver.status.get("studentPercent", 0)))
    expected = [(c.phase, c.student_percent) for c in local.checks[1:]]
    expected.append((local.outcome, 100 if local.outcome == "Promoted" else 0))
    assert taken == expected


def test_the_replays_raw_numbers_transform_back_to_the_prepared_ones(tiny_switch: Path) -> None:
    """The predictor's transform of what the replay sends gives exactly the inputs the models were tested on."""
    import pyarrow as pa

    from crossadapt.data.columns import numerical_values
    from operators.local_rollout.traffic import raw_numbers

    prepared = np.asarray(_dataset(tiny_switch).split("test").numerical)
    assert (prepared > 2).any() and ((prepared > 1) & (prepared <= 2)).any()  # both branches are exercised
    raw = raw_numbers(prepared, log_transformed=True)
    served = np.stack([numerical_values(pa.array(raw[:, j]), log_transform=True) for j in range(raw.shape[1])], 1)
    np.testing.assert_array_equal(served, prepared)


def test_bad_input_is_refused_in_one_line(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from crossadapt.cli import main; main()", "rollout", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2 and f"no teacher checkpoint at {tmp_path / 'teacher'}" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize(("steps", "problem"), [("50,10", "increase strictly"), ("0,100", "lie in [1, 100]"),
                                                ("ten", "comma-separated integers")])
def test_bad_steps_are_refused(steps: str, problem: str) -> None:
    import typer
    from pydantic import ValidationError

    from operators.local_rollout.cli import rollout_spec

    with pytest.raises((ValidationError, typer.BadParameter), match=re.escape(problem)):
        rollout_spec(None, steps, None)


def test_example_rollout_configs_validate() -> None:
    from operators.local_rollout.cli import rollout_spec

    configs = sorted((Path(__file__).resolve().parents[2] / "configs").glob("rollout-*.yaml"))
    assert configs, "configs/rollout-*.yaml missing"
    for path in configs:
        spec = rollout_spec(path, None, None)
        assert spec.steps and spec.steps == sorted(spec.steps)
