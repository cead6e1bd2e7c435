"""`crossadapt switch --services local`: the whole switch through the services' gRPC APIs equals the in-process one."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from switch_cli import CLI, ROOT, run_switch

from crossadapt.checkpoint import read_manifest

CONFIG = ROOT / "configs" / "switch-tiny.yaml"


def _switch(out: Path, *extra: str) -> dict:
    return run_switch(CONFIG, out, *extra)


@pytest.mark.slow
def test_the_switch_through_the_services_matches_the_in_process_switch(tmp_path: Path) -> None:
    in_process = _switch(tmp_path / "in-process")
    platform = _switch(tmp_path / "platform", "--services", "local")
    # Same seed, same stages: the student's test AUC within 0.2 points (the bar).
    assert abs(platform["student"]["auc"] - in_process["student"]["auc"]) <= 0.002
    assert platform["teacher"]["auc"] == in_process["teacher"]["auc"]
    assert platform["drift"]["shift"] == pytest.approx(in_process["drift"]["shift"], abs=1e-9)
    # The online stage's account, the same either way (no rolling estimate or collaboration unless asked).
    assert platform["online"] == in_process["online"]
    assert in_process["online"]["rows"] > 0 and in_process["online"]["rolling_drift"] is None
    # Every stage ran as an operation on its service, with its id and seconds.
    operations = platform["operations"]
    assert {op["service"] for op in operations} == {"projector", "sampler", "drift-detector", "offline-distiller",
                                                    "online-codistiller"}
    assert all(op["state"] == "SUCCEEDED" and op["operation_id"] and op["seconds"] > 0 for op in operations)
    assert platform["platform"] == "local" and in_process["operations"] == []
    report = (tmp_path / "platform" / "report.md").read_text()
    assert "## Platform operations (local)" in report and all(op["operation_id"] in report for op in operations)
    # The student checkpoint names the teacher as its parent; its manifest records where it came from.
    manifest = read_manifest(tmp_path / "platform" / "student")
    assert manifest.parent == str((tmp_path / "platform" / "teacher").resolve())
    assert manifest.extra["platform"] == "local"
    assert re.search(r"/student/v\d{6}$", manifest.extra["store_ref"])  # the co-distiller's last version,
    assert not manifest.extra["store_ref"].endswith("/v000001")  # not the offline distiller's v1


@pytest.mark.slow
def test_a_pcvr_switch_runs_end_to_end_through_the_services(tmp_path: Path) -> None:
    """target 'conversion' with unclicked-exposure augmentation: the sampler draws the clicked rows by their
    conversion and adds teacher-labelled unclicked ones, the offline distiller fits the conversion column
    (at the default kd_gate 'teacher_better'), the co-distiller streams the clicked rows."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["offline"]["sampling"].update(target="conversion", unclicked_ratio=0.5)
    config = tmp_path / "pcvr.yaml"
    config.write_text(yaml.safe_dump(raw))
    in_process = run_switch(config, tmp_path / "in-process")
    platform = run_switch(config, tmp_path / "platform", "--services", "local")
    assert platform["teacher"]["auc"] == in_process["teacher"]["auc"]  # the same pCVR teacher, scored on conversions
    assert {op["service"] for op in platform["operations"] if op["state"] == "SUCCEEDED"} == {
        "projector", "sampler", "drift-detector", "offline-distiller", "online-codistiller"}
    # The bar, as for clicks (seed 0 before 3376efd: 0.540110 both ways): the co-distiller service batches the
    # clicked rows as the in-process co-distiller does and distils at the same kd_gate.
    figures = {"in_process": in_process["student"]["auc"], "platform": platform["student"]["auc"]}
    assert abs(figures["platform"] - figures["in_process"]) <= 0.002, figures


@pytest.mark.slow
def test_an_adaptive_kd_switch_through_the_services_gives_the_in_process_student(tmp_path: Path) -> None:
    """adaptive_kd (#11): the offline distiller checks the student against the teacher on the training split's
    most recent rows (uploaded as its validation rows) and the co-distiller on every stream batch, as in
    process. A weak teacher (one epoch, 4 hidden units) that steps its tables online at 8x the student's
    embedding lr (`online.teacher_embedding_lr` 0.1: it gets worse over the stream, so the student overtakes
    it), batches of 128 and a fast schedule make λ move online (seed 0: 0.7 → 0.65 over the stream's 16
    batches; at the student's lr the teacher stays ahead and λ stays 0.7). Seed 0: the student's test AUC is
    0.703713 in process and through the services (the fixed λ 0.703661), held here to the issue's 0.2-point
    bar."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["teacher"]["train"].update(epochs=1, model={**raw["teacher"]["train"]["model"], "hidden_units": [4]})
    raw["optim"]["batch_size"] = 128
    raw["online"]["teacher_embedding_lr"] = 0.1
    raw["adaptive_kd"] = {"gap_onset": 0.0, "offline_eval_every_steps": 5, "offline": {"warmup": 0},
                          "online": {"warmup": 0, "ema_window": 10}}
    config = tmp_path / "adaptive.yaml"
    config.write_text(yaml.safe_dump(raw))
    in_process = run_switch(config, tmp_path / "in-process")
    platform = run_switch(config, tmp_path / "platform", "--services", "local")
    trace = read_manifest(tmp_path / "in-process" / "student").extra["details"]["online_kd_weight_trace"]
    assert min(weight for _, _, weight in trace) < 0.69  # λ left its fixed value
    assert {op["service"] for op in platform["operations"] if op["state"] == "SUCCEEDED"} == {
        "projector", "sampler", "drift-detector", "offline-distiller", "online-codistiller"}
    figures = {"in_process": in_process["student"]["auc"], "platform": platform["student"]["auc"]}
    assert abs(figures["platform"] - figures["in_process"]) <= 0.002, figures


@pytest.mark.slow
@pytest.mark.parametrize("option", ["rolling", "collaborative"])
def test_rolling_drift_and_collaborative_switches_through_the_services_give_the_in_process_student(
        tmp_path: Path, option: str) -> None:
    """online.drift.rolling and online.collaborative (#11) go to the co-distiller service, which re-estimates
    Δ_shift from the stream (bins fitted on the replay pool, the training split) / trains a collaborative
    teacher, as the in-process switch does. Seed 0, student test AUC in process and through the services (before
    3376efd's teacher lr):
    rolling (windows of 500 of the 2000 stream rows; the ratio moves, 167 replayed rows instead of 199)
    0.705852 both ways (0.705661 with the fixed ratio); collaborative (τ = 2 and batches of 128, so the
    teacher steps inside the stream and its KD targets change) 0.705195 both ways (0.705006 without).
    Held equal to 1e-9 (the same batches, draws and steps), well inside the issue's 0.2-point bar."""
    raw = yaml.safe_load(CONFIG.read_text())
    if option == "rolling":
        raw["online"]["drift"].update(rolling=True, window_rows=500)
    else:
        raw["optim"]["batch_size"] = 128
        raw["online"].update(teacher_update_interval=2, collaborative={})
    config = tmp_path / f"{option}.yaml"
    config.write_text(yaml.safe_dump(raw))
    in_process = run_switch(config, tmp_path / "in-process")
    platform = run_switch(config, tmp_path / "platform", "--services", "local")
    assert {op["service"] for op in platform["operations"] if op["state"] == "SUCCEEDED"} == {
        "projector", "sampler", "drift-detector", "offline-distiller", "online-codistiller"}
    details = read_manifest(tmp_path / "in-process" / "student").extra["details"]
    if option == "collaborative":
        assert details["collaboration_share"] > 0  # the student taught the teacher on some rows
    # results.json says what the option did, the same from either path (the co-distiller's manifest).
    online = in_process["online"]
    assert platform["online"] == online  # the same stream, draws and windows: equal figures
    assert online["rows"] == 2000
    if option == "rolling":
        assert online["replay_rows"] == 167 and online["collaboration_share"] is None
        assert online["rolling_drift"]["windows"] == 4 and online["rolling_drift"]["rows"] == 2000
        assert online["rolling_drift"]["shift"] is not None
        assert "Rolling drift: 4 windows over 2,000 rows" in (tmp_path / "platform" / "report.md").read_text()
    else:
        assert online["rolling_drift"] is None and online["collaboration_share"] == details["collaboration_share"]
        assert online["teacher_updates"] > 0  # τ = 2: the teacher stepped inside the stream
        assert "The student taught the teacher on" in (tmp_path / "platform" / "report.md").read_text()
    figures = {"in_process": in_process["student"]["auc"], "platform": platform["student"]["auc"]}
    assert figures["platform"] == pytest.approx(figures["in_process"], abs=1e-9), figures


def test_options_the_services_cannot_honour_are_refused_before_anything_runs(tmp_path: Path) -> None:
    config = tmp_path / "ablation.yaml"
    config.write_text(CONFIG.read_text() + "ablation: {co_evolution: false}\n")
    result = subprocess.run([*CLI, "switch", "--config", str(config), "--out", str(tmp_path / "out"),
                             "--services", "local"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 2 and "ablation.co_evolution=false" in result.stderr
    assert not (tmp_path / "out" / "data").exists()  # refused before the data work


def test_a_malformed_services_address_is_refused(tmp_path: Path) -> None:
    result = subprocess.run([*CLI, "switch", "--config", str(CONFIG), "--out", str(tmp_path / "out"),
                             "--services", "projector=h:1,nope=h:2"], capture_output=True, text=True, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 2 and "nope" in result.stderr


@pytest.mark.slow
def test_a_student_of_the_teachers_own_network_starts_from_it_through_the_services_as_in_process(
        tmp_path: Path) -> None:
    """offline.reuse_teacher_network (the default): switch-tiny with the teacher's own MLP as the student. The
    in-process switch and the offline-distiller service both start it from the teacher's network (the service
    reports the tensors it took), and the two paths give the same student: a service that kept the random
    network would end far from the in-process student."""
    raw = yaml.safe_load(CONFIG.read_text())
    raw["student"]["model"] = raw["teacher"]["train"]["model"]
    config = tmp_path / "same-network.yaml"
    config.write_text(yaml.safe_dump(raw))
    in_process = run_switch(config, tmp_path / "in-process")
    platform = run_switch(config, tmp_path / "platform", "--services", "local")
    reuse = read_manifest(tmp_path / "in-process" / "student").extra["details"]["network_reuse"]
    assert reuse["reused"] and reuse["tensors"] == 9  # [64, 32, 4] and the output layer: 8 tensors; the offset
    # results.json and the report say so, the same from either path (the platform's from the distiller)
    assert in_process["network_reuse"] == platform["network_reuse"] == {
        "reused": True, "tensors": 9, "reason": "", "mismatched": []}
    for path in ("in-process", "platform"):
        assert "its network started from the teacher's (9 tensors" in (tmp_path / path / "report.md").read_text()
    figures = {"in_process": in_process["student"]["auc"], "platform": platform["student"]["auc"]}
    assert figures["platform"] == pytest.approx(figures["in_process"], abs=1e-9), figures
