"""`crossadapt bench paper`: the runner on the micro preset writes exactly the documented JSON schema."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from crossadapt.cli import run as cli
from crossadapt.transfer.experiments.presets import PRESETS, BenchPreset, SettingSpec, scaled_embedding_lr
from crossadapt.transfer.experiments.methods import ABLATIONS, METHODS, RELATED_PAPER_METHODS

PAPER_METHODS = {"Scratch", "Scratch-Online", "Full-Retrain", "Vanilla-KD", "Hint-KD", "RKD", "CrossAdapt-Full",
                 "CrossAdapt-Sample", "CrossAdapt-Adaptive"}
STATS_KEYS = {"auc_mean", "auc_std", "logloss_mean", "logloss_std", "train_seconds_mean"}


def test_registry_has_the_papers_method_names_and_ablations() -> None:
    assert set(METHODS) == PAPER_METHODS | {"CrossAdapt-Collaborative", "CrossDomain-WarmStart"}
    assert set(METHODS) - set(RELATED_PAPER_METHODS) == PAPER_METHODS
    assert list(ABLATIONS) == ["w/o projection", "w/o progressive", "w/o sampling", "w/o offline stage",
                               "w/o co-evolution", "w/o asymmetry", "w/o adaptive replay", "w/o online stage"]
    standard = PRESETS["standard"]
    assert standard.seeds == 5 and set(standard.main.methods) == PAPER_METHODS
    assert [(p.teacher.architecture, p.student.architecture) for p in standard.main.pairs] == [
        ("mlp", "mlp"), ("mlp", "fibinet")]
    assert standard.widths is not None and standard.widths.scenarios == [(8, 8), (8, 16), (16, 8), (16, 32), (32, 16)]
    # the related papers' methods run in their own preset, the warm start where a source domain exists
    related = PRESETS["related"]
    assert related.main.synthetic is not None and related.main.synthetic.preset == "two_domain"
    assert set(RELATED_PAPER_METHODS) <= set(related.main.methods)
    assert not set(RELATED_PAPER_METHODS) & set(PRESETS["smoke"].main.methods)


def test_every_preset_scales_the_papers_embedding_lr_with_its_batch() -> None:
    assert scaled_embedding_lr(4096) == pytest.approx(0.1)  # the paper's own setting
    assert scaled_embedding_lr(512) == pytest.approx(0.0125)
    for preset in PRESETS.values():
        assert preset.optim.dense_lr == pytest.approx(1e-3)
        assert preset.optim.embedding_lr == pytest.approx(scaled_embedding_lr(preset.optim.batch_size)), preset.name


def test_presets_reject_unknown_methods() -> None:
    micro = PRESETS["micro"]
    with pytest.raises(ValueError, match="unknown method"):
        BenchPreset(name="x", main=SettingSpec(name="s", pairs=micro.main.pairs, methods=["Scratch", "Magic-KD"]))


@pytest.mark.slow
def test_micro_bench_writes_the_schema_and_tables(tmp_path: Path, capsys) -> None:
    out = tmp_path / "paper.json"
    work = tmp_path / "work"
    assert cli(["bench", "paper", "--preset", "micro", "--json", str(out), "--out", str(work)]) == 0

    data = json.loads(out.read_text())
    assert set(data) == {"oracle_auc", "pairs"}
    assert isinstance(data["oracle_auc"], float) and 0.5 < data["oracle_auc"] < 1.0
    micro = PRESETS["micro"]
    assert len(data["pairs"]) == len(micro.main.pairs)
    for pair in data["pairs"]:
        assert set(pair) == {"teacher", "student", "methods"}
        assert (pair["teacher"], pair["student"]) == ("mlp-8", "mlp-8")
        assert list(pair["methods"]) == micro.main.methods
        for stats in pair["methods"].values():
            assert set(stats) == STATS_KEYS
            assert all(isinstance(v, float) and math.isfinite(v) for v in stats.values())
            assert 0.0 < stats["auc_mean"] < 1.0  # a fraction, not percent
            assert stats["auc_std"] == 0.0  # one seed
            assert stats["train_seconds_mean"] > 0.0

    report = (work / "report.md").read_text()
    assert "| Student | Method | AUC (%) | LogLoss | Time (s) |" in report
    assert "| mlp-8 (teacher mlp-8) | Teacher Model |" in report
    assert "Δ (Sample) vs Scratch" in report
    assert "| w/o projection |" in report and "| 8 → 16 | expansion |" in report
    assert (work / "convergence.png").stat().st_size > 0
    full = json.loads((work / "paper-full.json").read_text())
    assert [row["name"] for row in full["ablation"]] == ["CrossAdapt-Sample", "w/o projection"]
    assert full["widths"][0]["teacher_dim"] == 8 and full["widths"][0]["student_dim"] == 16
    # Paired deltas vs Scratch: every non-Scratch method of each pair, each table; one seed: no seed interval.
    deltas = {d["method"]: d for d in full["main"]["deltas"][0]["deltas"]}
    assert set(deltas) == set(micro.main.methods) - {"Scratch"}
    auc = {m: s["auc_mean"] for m, s in data["pairs"][0]["methods"].items()}
    for method, d in deltas.items():
        assert d["delta_pp"] == pytest.approx(100 * (auc[method] - auc["Scratch"]))
        assert d["seed_ci_pp"] is None and d["rows_ci_pp"][0] < d["rows_ci_pp"][1]
        # The point estimate sits inside its own row bootstrap interval (a loose check the pairing is right).
        assert d["rows_ci_pp"][0] - 0.05 <= d["delta_pp"] <= d["rows_ci_pp"][1] + 0.05
    assert all(row["vs_scratch"]["rows_ci_pp"] for row in full["ablation"]) and full["widths"][0]["vs_scratch"]
    assert "#### Paired deltas vs Scratch" in report and "Rows 95% CI" in report
    runs = (work / "runs.jsonl").read_text().splitlines()
    # 3 methods + 1 ablation + 3 width cells (8 → 16 is a new pair), each run once.
    assert len(runs) == 7
    assert len(list((work / "teachers").rglob("manifest.json"))) == 1  # one teacher (mlp-8, seed 0), reused
    assert "synthetic-small" in capsys.readouterr().out
