"""Switches beyond the paper end to end: an online split of a newer vocabulary version, and a pCVR switch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from crossadapt.checkpoint import VocabHashMismatchError
from crossadapt.data import DatasetSchema, PrepareConfig, PreparedDataset, append_split, prepare_dataset
from crossadapt.data.growth import GrowthConfig
from crossadapt.transfer.switch import obtain_teacher, run_switch
from crossadapt.transfer.switch_config import TeacherTraining, parse_switch_config

SCHEMA = DatasetSchema(label="y", timestamp="t", categorical=["c", "d"], numerical=["x"])
MODEL = {"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}


def _rows(values: list[str], start: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    c = rng.choice(values, 2000)
    effect = {v: rng.normal(0.0, 1.5) for v in values}
    p = 1.0 / (1.0 + np.exp(-np.array([effect[v] for v in c])))
    return pa.table({"t": np.arange(start, start + 2000), "c": c, "d": rng.choice(["p", "q"], 2000),
                     "x": rng.standard_normal(2000), "y": (rng.random(2000) < p).astype(np.int64)})


def test_older_teacher_grows_to_the_online_version_and_the_student_names_it(tmp_path: Path) -> None:
    old = [f"v{i}" for i in range(20)]
    dataset = prepare_dataset(_rows(old, 0, 0), tmp_path / "ds", schema=SCHEMA,
                              config=PrepareConfig(min_count=1, split="4:4:1:1"))
    obtain_teacher(dataset, TeacherTraining(model=MODEL), tmp_path / "teacher", seed=0, batch_size=256)
    v1 = dataset.vocabulary
    # The online day brings 6 new values of c (a newer vocabulary version); the test split stays older.
    append_split(dataset, "online", _rows(old[:14] + [f"n{i}" for i in range(6)], 10_000, 1), overwrite=True,
                 growth=GrowthConfig(min_count=2))
    grown = PreparedDataset.open(dataset.path)
    assert grown.manifest.vocab_version == 2
    raw = {"data": {"dir": str(grown.path)}, "teacher": {"checkpoint": str(tmp_path / "teacher")},
           "student": {"model": {**MODEL, "embedding_dim": 3}}, "baselines": [], "threads": 1,
           "optim": {"batch_size": 256},
           "offline": {"sampling": {"ratio": 0.5, "temporal_blocks": 2},
                       "distillation": {"frozen_epochs": 1, "joint_epochs": 0}}}
    with pytest.raises(VocabHashMismatchError):  # without growth an older teacher is another vocabulary
        run_switch(parse_switch_config(raw), tmp_path / "refused")
    results = run_switch(parse_switch_config({**raw, "online": {"grow_vocabulary": True}}), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "student" / "manifest.json").read_text())
    assert manifest["extra"]["vocab_version"] == 2 and manifest["vocab_hash"] == grown.vocab_hash != v1.hash
    sizes = manifest["extra"]["details"]["vocabulary_sizes"]
    assert sizes["c"] == grown.feature_spec.categorical[0].vocab_size == v1.size("c") + 6
    assert results.student.auc > 0.5


def test_pcvr_switch_trains_and_scores_on_conversions(tmp_path: Path) -> None:
    """offline.sampling.target 'conversion' end to end: a pCVR teacher, the augmented clicked sample, the
    clicked online rows, and test figures on the clicked rows' conversions."""
    from crossadapt.training import evaluate_model
    from crossadapt.transfer.switch import prepare_synthetic

    dataset = prepare_synthetic("small", 12_000, 0, tmp_path / "data")
    raw = {"data": {"dir": str(dataset.path)}, "teacher": {"train": {"model": MODEL}}, "baselines": [],
           "student": {"model": {**MODEL, "embedding_dim": 3}}, "threads": 1, "optim": {"batch_size": 256},
           "offline": {"sampling": {"target": "conversion", "unclicked_ratio": 1.0, "temporal_blocks": 2,
                                    "ratio": 0.5}, "distillation": {"frozen_epochs": 1, "joint_epochs": 0}}}
    results = run_switch(parse_switch_config(raw), tmp_path / "out")
    manifest = json.loads((tmp_path / "out" / "teacher" / "manifest.json").read_text())
    assert manifest["extra"]["target"] == "conversion"
    details = json.loads((tmp_path / "out" / "student" / "manifest.json").read_text())["extra"]["details"]
    online = dataset.split("online")
    assert details["online_rows"] == int(online.label.sum()) and details["unclicked_rows"] > 0
    from crossadapt.checkpoint import load_checkpoint

    student = load_checkpoint(tmp_path / "out" / "student").model
    conversion_auc = evaluate_model(student, dataset.split("test"), target="conversion")["auc"]
    assert results.student.auc == pytest.approx(conversion_auc, abs=1e-9)
