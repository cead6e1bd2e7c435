"""`crossadapt bench predictor` feeds both servers the same rows: the raw values our predictor gets encode,
through the published vocabulary and the training transform, to exactly the bare model's inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from crossadapt.data.columns import numerical_values
from services.common.model_io import load_vocabulary
from services.common.storage import CheckpointStore, LocalObjectStore
from services.predictor.bench import CATEGORICAL_FIELDS, NUMERICAL_FIELDS, build_world, raw_rows


def test_raw_and_encoded_payloads_are_the_same_rows(tmp_path: Path) -> None:
    world = build_world(tmp_path, max_cardinality=500)
    checkpoints = CheckpointStore(LocalObjectStore(Path(world["store"])))
    name, _, version = world["checkpoint"].rpartition("/")
    vocabulary = load_vocabulary(checkpoints, checkpoints.resolve(name, version))
    payload = raw_rows(world["cardinalities"], 64, np.random.default_rng(0))
    raw = payload["raw"]
    ids = np.stack([vocabulary.encode(f"C{i + 1}", pa.array(raw[f"C{i + 1}"])) for i in range(CATEGORICAL_FIELDS)], 1)
    numbers = np.stack([numerical_values(pa.array(raw[f"I{i + 1}"]), log_transform=True)
                        for i in range(NUMERICAL_FIELDS)], 1)
    assert (ids == payload["categorical"]).all() and (ids > 0).all()
    assert np.array_equal(numbers, payload["numerical"])
    assert len(set(raw["user_id"])) > 1


def test_predictor_settings_for_the_bench_are_checked_by_name() -> None:
    import pytest
    import typer

    from services.predictor.bench import parse_settings

    assert parse_settings(["shadow_chunk_jobs=1024", "shadow_share=0.5"]) == {"shadow_chunk_jobs": "1024",
                                                                              "shadow_share": "0.5"}
    for bad in (["shadow_chunk_jobs"], ["no_such_setting=1"]):
        with pytest.raises(typer.BadParameter):
            parse_settings(bad)
