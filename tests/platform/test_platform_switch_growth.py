"""`crossadapt switch --services local` with `online.grow_vocabulary`: a teacher of an older vocabulary
version, an online day with new values; the platform's student grows like the in-process one (#16)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from switch_cli import ROOT, run_switch

from crossadapt.checkpoint import read_manifest
from crossadapt.data import (
    PrepareConfig,
    PreparedDataset,
    append_split,
    prepare_dataset,
)
from crossadapt.data.growth import GrowthConfig
from crossadapt.transfer.switch import obtain_teacher
from crossadapt.transfer.switch_config import TeacherTraining
from services.common.model_io import load_vocabulary
from services.common.storage import CheckpointStore, LocalObjectStore


def _in_process_growth_test():  # noqa: ANN202
    """The in-process growth test's module (tests/transfer is no package): its data and model, reused."""
    spec = importlib.util.spec_from_file_location("switch_growth_data", ROOT / "tests/transfer/test_switch_growth.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GROWTH = _in_process_growth_test()
SCHEMA, MODEL, _rows = GROWTH.SCHEMA, GROWTH.MODEL, GROWTH._rows


_switch = run_switch


@pytest.mark.slow
def test_a_grown_vocabulary_switch_through_the_services_matches_the_in_process_one(tmp_path: Path) -> None:
    old = [f"v{i}" for i in range(20)]
    dataset = prepare_dataset(_rows(old, 0, 0), tmp_path / "ds", schema=SCHEMA,
                              config=PrepareConfig(min_count=1, split="4:4:1:1"))
    obtain_teacher(dataset, TeacherTraining(model=MODEL), tmp_path / "teacher", seed=0, batch_size=256)
    v1 = dataset.vocabulary
    append_split(dataset, "online", _rows(old[:14] + [f"n{i}" for i in range(6)], 10_000, 1), overwrite=True,
                 growth=GrowthConfig(min_count=2))
    grown = PreparedDataset.open(dataset.path)
    config = tmp_path / "switch.yaml"
    config.write_text(json.dumps({
        "data": {"dir": str(grown.path)}, "teacher": {"checkpoint": str(tmp_path / "teacher")},
        "student": {"model": {**MODEL, "embedding_dim": 3}}, "baselines": [], "threads": 1, "seed": 3,
        "optim": {"batch_size": 256}, "online": {"grow_vocabulary": True},
        "offline": {"sampling": {"ratio": 0.5, "temporal_blocks": 2},
                    "distillation": {"frozen_epochs": 1, "joint_epochs": 0, "kd_gate": "all"}}}))
    in_process = _switch(config, tmp_path / "in-process")
    platform = _switch(config, tmp_path / "platform", "--services", "local")
    ours, theirs = read_manifest(tmp_path / "platform" / "student"), read_manifest(tmp_path / "in-process" / "student")
    # The same grown student: the online version's tables (6 new values of c), named as that version.
    assert ours.feature_spec == theirs.feature_spec == grown.feature_spec
    assert ours.feature_spec.categorical[0].vocab_size == v1.size("c") + 6
    assert (ours.vocab_hash, ours.extra["vocab_version"]) == (theirs.vocab_hash, theirs.extra["vocab_version"]) \
        == (grown.vocab_hash, 2)
    assert abs(platform["student"]["auc"] - in_process["student"]["auc"]) <= 0.002  # the 0.2 points
    assert {op["service"] for op in platform["operations"]} >= {"offline-distiller", "online-codistiller"}
    # The platform's grown student carries the grown version's values (the stream went up with them), so a
    # predictor can serve it from raw values: the 6 new values of c map to the rows its table grew.
    store = CheckpointStore(LocalObjectStore(tmp_path / "platform" / "platform" / "home" / "store"))
    published = store.resolve(*ours.extra["store_ref"].rsplit("/", 1))
    carried = load_vocabulary(store, published)
    assert published.manifest.extra["has_vocabulary"] and (carried.hash, carried.version) == (grown.vocab_hash, 2)
    added = grown.vocabulary.values("c")[v1.size("c") - 1:]
    assert carried.encode("c", added).tolist() == list(range(v1.size("c"), v1.size("c") + 6))
