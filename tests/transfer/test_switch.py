"""`crossadapt switch`: config validation (through the real CLI) and a tiny end-to-end switch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from crossadapt.cli import run as cli
from crossadapt.transfer.switch_config import ConfigError, load_switch_config, parse_switch_config

REPO = Path(__file__).resolve().parents[2]
TINY = REPO / "configs" / "switch-tiny.yaml"
SYNTHETIC = {"synthetic": {"preset": "small", "rows": 20_000}}


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "switch.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_defaults_are_the_papers() -> None:
    config = parse_switch_config({"data": SYNTHETIC})
    d, s, o = config.offline.distillation, config.offline.sampling, config.online
    assert (d.kd_weight, d.temperature) == (0.7, 4.0)
    assert (s.ratio, s.positive_ratio, s.temporal_blocks) == (0.1, 0.5, 10)
    assert o.teacher_update_interval == 10
    assert (o.drift.metric, o.drift.windows, o.drift.bins, o.drift.theta_low, o.drift.theta_high, o.drift.max_replay) == (
        "js", 10, 50, 0.01, 0.05, 0.1)
    # The exception: the optimiser is fitted to the data unless the config says `optim: paper` or sets values.
    assert config.optim.preset == "data" and config.optim.batch_size is None
    assert config.baselines == ["Scratch"]
    assert config.adaptive_kd is None  # the paper's fixed λ unless asked for
    assert config.teacher.train is not None and config.teacher.train.model.architecture == "mlp"
    assert config.student.model.architecture == "fibinet" and config.student.model.embedding_dim == 16


@pytest.mark.parametrize(
    ("patch", "needle"),
    [
        ({"offline": {"sampling": {"ratoi": 0.1}}}, "offline.sampling.ratoi: unknown key"),
        ({"offline": {"sampling": {"ratio": 1.5}}}, "offline.sampling.ratio: Input should be less than or equal to 1"),
        ({"offline": {"distillation": {"lambda": -0.1}}}, "offline.distillation.lambda"),
        ({"online": {"drift": {"theta_low": 0.2}}}, "online.drift: online.drift needs theta_low < theta_high"),
        ({"online": {"drift": {"metric": "hellinger"}}}, "online.drift.metric"),
        ({"student": {"model": {"architecture": "fibinet", "embeding_dim": 16}}}, "embeding_dim: unknown key"),
        ({"baselines": ["Scratch", "KD"]}, "unknown baseline(s) ['KD']"),
        ({"data": {"synthetic": {"preset": "small", "rows": 20_000}, "dir": "x"}}, "give exactly one of data.dir"),
        ({"ablation": {"offline_stage": False, "online_stage": False}}, "cannot switch off both"),
        ({"adaptive_kd": {"gap_onset": 0.05, "gap_saturation": 0.01}}, "adaptive_kd: gap_saturation (0.01) must be"),
        ({"adaptive_kd": {"lambda_flor": 0.2}}, "adaptive_kd.lambda_flor: unknown key"),
    ],
)
def test_invalid_config_is_rejected_naming_the_field(tmp_path: Path, capsys, patch: dict, needle: str) -> None:
    config = {"data": SYNTHETIC} | patch
    path = _write(tmp_path, config)
    with pytest.raises(ConfigError, match=None) as info:
        load_switch_config(path)
    assert needle in str(info.value) and str(path) in str(info.value)
    assert cli(["switch", "--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err
    assert not (tmp_path / "out").exists()


def test_unreadable_and_malformed_configs_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_switch_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {synthetic: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+ column \d+ not valid YAML"):
        load_switch_config(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_switch_config(bad)


def test_config_choices_match_the_libraries() -> None:
    from typing import get_args

    from crossadapt.data.synthetic_config import PRESETS as DATA_PRESETS
    from crossadapt.transfer.experiments.baselines import BASELINES
    from crossadapt.transfer.switch_config import BASELINE_NAMES, SyntheticData

    assert BASELINE_NAMES == BASELINES
    assert set(get_args(SyntheticData.model_fields["preset"].annotation)) == set(DATA_PRESETS)


def test_example_configs_validate() -> None:
    # rollout-*.yaml are `crossadapt rollout` configs (validated by tests/operator), not switch configs.
    switch_configs = [p for p in sorted((REPO / "configs").glob("*.yaml")) if not p.name.startswith("rollout-")]
    assert len(switch_configs) >= 3
    for path in switch_configs:
        load_switch_config(path)


@pytest.mark.slow
def test_tiny_switch_end_to_end(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert cli(["switch", "--config", str(TINY), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "report: " in stdout and "Scratch" in stdout

    student = json.loads((out / "student" / "manifest.json").read_text())
    teacher = json.loads((out / "teacher" / "manifest.json").read_text())
    assert student["parent"] == str((out / "teacher").resolve())
    assert student["architecture"] == "fibinet" and teacher["architecture"] == "mlp"
    assert student["vocab_hash"] == teacher["vocab_hash"]
    assert (out / "student" / "model.safetensors").stat().st_size > 0

    for name in ("report.md", "metrics.png", "convergence.png", "drift.png"):
        assert (out / name).stat().st_size > 0, name
    results = json.loads((out / "results.json").read_text())
    assert results["teacher"]["role"] == "teacher" and results["student"]["role"] == "student"
    assert [b["name"] for b in results["baselines"]] == ["Scratch"]
    for entry in (results["teacher"], results["student"], *results["baselines"]):
        assert 0.0 < entry["auc"] < 1.0 and entry["logloss"] > 0.0
    assert results["student"]["train_seconds"] > 0 and results["baselines"][0]["train_seconds"] > 0
    # Better than a random predictor (AUC 0.5) on the held-out test split.
    assert results["student"]["auc"] > 0.55
    # The verdict: promote only a student that reaches its teacher, with the paired row interval.
    verdict, gap = results["verdict"], 100 * (results["student"]["auc"] - results["teacher"]["auc"])
    assert verdict["promote"] is (gap >= 0) and verdict["delta_pp"] == pytest.approx(gap)
    low, high = verdict["rows_ci_pp"]
    assert low < high and low - 0.5 < gap < high + 0.5
    report = (out / "report.md").read_text()
    assert f"## Verdict: {'promote' if gap >= 0 else 'do not promote'}" in report
    # The optimiser the config set (switch-tiny sets all three values), stated with its rows.
    assert results["optim"]["batch_size"] == 512 and results["optim"]["explicit"] == ["batch_size", "embedding_lr",
                                                                                       "dense_lr"]
    assert "## Optimiser" in report and "steps per epoch" in report
    assert 0.6 < results["oracle_auc"] < 1.0
    assert set(results["stage_seconds"]) == {"projection", "sampling", "offline_distillation", "drift",
                                             "online_codistillation"}
    assert results["drift"]["per_feature"] and results["drift"]["replay_ratio"] >= 0.0
    report = (out / "report.md").read_text()
    assert "| Teacher (mlp-8) | teacher |" in report and "| Scratch | baseline |" in report
    assert "![Per-feature drift](drift.png)" in report

    # Running again reuses the dataset and the teacher checkpoint instead of regenerating/retraining.
    from crossadapt.transfer.switch import obtain_teacher, prepare_synthetic

    config = load_switch_config(TINY)
    teacher_mtime = (out / "teacher" / "manifest.json").stat().st_mtime_ns
    syn = config.data.synthetic
    dataset = prepare_synthetic(syn.preset, syn.rows, syn.seed, out / "data")
    assert dataset.vocab_hash == teacher["vocab_hash"]
    _, seconds = obtain_teacher(dataset, config.teacher.train, out / "teacher", seed=config.seed,
                                batch_size=config.optim.batch_size)
    assert seconds == 0.0 and (out / "teacher" / "manifest.json").stat().st_mtime_ns == teacher_mtime
    # ...but a different teacher config retrains.
    _, seconds = obtain_teacher(dataset, config.teacher.train.model_copy(update={"epochs": 1}), out / "teacher",
                                seed=config.seed, batch_size=config.optim.batch_size)
    assert seconds > 0.0


@pytest.mark.slow
def test_switch_from_a_teacher_checkpoint_with_ablations(tmp_path: Path) -> None:
    """`teacher.checkpoint` + `data.dir` instead of training; offline stage off (ablation)."""
    from crossadapt.transfer.switch import obtain_teacher, prepare_synthetic, run_switch
    from crossadapt.transfer.switch_config import TeacherTraining

    dataset = prepare_synthetic("small", 12_000, 0, tmp_path / "data")
    obtain_teacher(dataset, TeacherTraining(), tmp_path / "prod-teacher", seed=0, batch_size=1024)
    raw = yaml.safe_load(TINY.read_text())
    raw.update(data={"dir": str(dataset.path)}, teacher={"checkpoint": str(tmp_path / "prod-teacher")},
               baselines=[], ablation={"offline_stage": False, "asymmetry": False},
               adaptive_kd={"lambda_floor": 0.2, "online": {"warmup": 0}})
    raw["student"]["model"] = {"architecture": "mlp", "embedding_dim": 4, "hidden_units": [16]}
    results = run_switch(parse_switch_config(raw), tmp_path / "out")
    assert "offline_distillation" not in results.stage_seconds and "online_codistillation" in results.stage_seconds
    assert results.ablation["offline_stage"] is False
    manifest = json.loads((tmp_path / "out" / "student" / "manifest.json").read_text())
    assert manifest["parent"] == str((tmp_path / "prod-teacher").resolve())
    assert manifest["extra"]["details"]["teacher_updates"] > 0  # τ = 1 without asymmetry: a step per batch
    assert manifest["extra"]["adaptive_kd"]["lambda_floor"] == 0.2
    trace = manifest["extra"]["details"]["online_kd_weight_trace"]  # (batch, gap, λ) per online batch
    batch = parse_switch_config(raw).optim.batch_size
    assert len(trace) == -(-len(dataset.split("online")) // batch) > 0
    assert all(0.2 <= weight <= 0.7 for _, _, weight in trace)


def test_the_platform_path_runs_kd_gate_pcvr_and_adaptive_kd_as_configured() -> None:
    from services.common.checks import adaptive_kd_config
    from services.switch import _adaptive_kd, unsupported_options

    default = parse_switch_config({"data": SYNTHETIC})
    assert default.offline.distillation.kd_gate == "teacher_better" and unsupported_options(default) == []
    pcvr = parse_switch_config({"data": SYNTHETIC, "offline": {
        "sampling": {"target": "conversion", "unclicked_ratio": 0.5}, "distillation": {"kd_gate": "all"}}})
    assert unsupported_options(pcvr) == []
    adaptive = parse_switch_config({"data": SYNTHETIC, "adaptive_kd": {"lambda_floor": 0.2, "offline": {"warmup": 0}}})
    assert unsupported_options(adaptive) == []  # the distillers take it (#11)
    # what the switch sends both distillers reads back, at the services, as the very same core config
    assert adaptive_kd_config(_adaptive_kd(adaptive), "config.adaptive") == adaptive.adaptive_kd
    assert _adaptive_kd(default) is None


def test_the_platform_path_takes_rolling_drift_and_collaborative_and_refuses_what_it_cannot_honour() -> None:
    """Rolling drift re-estimation and collaborative co-distillation go to the co-distiller service (#11), field
    for field as the core reads them; ablations and a device other than cpu are still refused before anything runs."""
    from services.common.proto import online_codistiller_pb2
    from services.online_codistiller.config import CoDistillationSettings
    from services.switch import _collaborative, unsupported_options

    rolling = parse_switch_config({"data": SYNTHETIC, "online": {"drift": {"rolling": True, "window_rows": 500}}})
    assert unsupported_options(rolling) == []
    collaborative = parse_switch_config({"data": SYNTHETIC, "online": {"collaborative": {"gate": "gap",
                                                                                          "weight": 0.5}}})
    assert unsupported_options(collaborative) == []
    # what the switch sends reads back, at the service, as the very same core config
    sent = online_codistiller_pb2.CoDistillationConfig(collaborative=_collaborative(collaborative))
    assert CoDistillationSettings.from_proto(sent).online.collaborative == collaborative.online.collaborative
    assert _collaborative(rolling) is None
    refused = parse_switch_config({"data": SYNTHETIC, "online": {"drift": {"rolling": True}},
                                   "ablation": {"co_evolution": False}, "device": "cuda"})
    assert [p.split(" ")[0].split("=")[0] for p in unsupported_options(refused)] == ["ablation.co_evolution",
                                                                                     "device"]
