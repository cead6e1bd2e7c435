"""Missing numerical values: an indicator per field (not a silent 0), Criteo's empty cells and negative
counts, and datasets without missing values exactly as before."""

import json

import numpy as np
import pyarrow as pa
import pytest
from data_sources import criteo_line, write_lines

from crossadapt.data import DatasetSchema, PrepareConfig, PreparedDataset, append_split, prepare_dataset, synthetic_preset
from crossadapt.models import FeatureSpec, build_model

SCHEMA = DatasetSchema(label="y", categorical=["c"], numerical=["x", "z"])
ONE_SPLIT = dict(min_count=1, split="1:0:0:0")


def table(x, z):
    n = len(x)
    return pa.table({"c": ["a"] * n, "x": x, "z": z, "y": [i % 2 for i in range(n)]})


def test_missing_value_sets_its_indicator_and_reads_zero(tmp_path):
    x = [8.0, None, 0.0, float("nan"), 3.0]
    ds = prepare_dataset(table(x, [1.0] * 5), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(**ONE_SPLIT))
    assert ds.manifest.missing_indicator_fields == ["x"]  # z has no missing value: no indicator
    assert ds.feature_spec.numerical == ("x", "z", "x__missing")
    hist = ds.split("hist")
    np.testing.assert_allclose(hist.numerical[:, 0], [3, 0, 0, 0, np.log2(3)], rtol=1e-6)
    np.testing.assert_array_equal(hist.numerical[:, 2], [0, 1, 0, 1, 0])  # a true 0 (row 2) is not missing
    assert hist.numerical.shape == (5, 3)


def test_modes_all_none_and_negative_counts(tmp_path):
    x, z = [4.0, -2.0, None], [1.0, 2.0, 3.0]
    everything = PrepareConfig(**ONE_SPLIT, missing_indicators="all")
    ds = prepare_dataset(table(x, z), tmp_path / "all", schema=SCHEMA, config=everything)
    assert ds.feature_spec.numerical == ("x", "z", "x__missing", "z__missing")
    np.testing.assert_allclose(ds.split("hist").numerical[:, 1:], [[1, 0, 0], [2, 0, 0], [np.log2(3), 1, 0]], rtol=1e-6)
    none = prepare_dataset(table(x, z), tmp_path / "none", schema=SCHEMA, config=PrepareConfig(**ONE_SPLIT, missing_indicators="none"))
    assert none.feature_spec.numerical == ("x", "z") and none.split("hist").numerical.shape == (3, 2)
    np.testing.assert_array_equal(none.split("hist").numerical[:, 0], [2, -2, 0])  # negatives kept by default
    as_missing = PrepareConfig(**ONE_SPLIT, negative_numerical="missing")
    neg = prepare_dataset(table(x, z), tmp_path / "neg", schema=SCHEMA, config=as_missing)
    np.testing.assert_allclose(neg.split("hist").numerical, [[2, 1, 0], [0, 2, 1], [0, np.log2(3), 1]], rtol=1e-6)


def test_criteo_empty_cells_streamed_and_in_memory_agree(tmp_path):
    lines = [criteo_line(i % 2, [i, "", -1 if i % 3 == 0 else i] + [5] * 10, [f"v{i % 3}"] * 26) for i in range(40)]
    path = write_lines(tmp_path / "train.txt", lines)
    config = PrepareConfig(min_count=1, negative_numerical="missing")
    streamed = prepare_dataset(path, tmp_path / "s", source_format="criteo", config=config, chunk_rows=7, block_bytes=500)
    in_memory = prepare_dataset(path, tmp_path / "m", source_format="criteo", config=config, streaming=False)
    assert streamed.manifest.missing_indicator_fields == in_memory.manifest.missing_indicator_fields == ["I2", "I3"]
    rows = np.concatenate([streamed.split(s).numerical for s in streamed.split_names])
    np.testing.assert_array_equal(rows, np.concatenate([in_memory.split(s).numerical for s in in_memory.split_names]))
    assert rows.shape == (40, 15)
    np.testing.assert_array_equal(rows[:, 13], 1)  # I2 always empty
    np.testing.assert_array_equal(rows[:, 14], (np.arange(40) % 3 == 0).astype(np.float32))  # I3 = -1: missing


def test_data_without_missing_values_keeps_its_old_layout_and_models(tmp_path):
    x = [1.0, 2.0, 5.0, 9.0]
    ds = prepare_dataset(table(x, x), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(**ONE_SPLIT))
    old_spec = FeatureSpec(categorical=ds.feature_spec.categorical, numerical=("x", "z"))
    assert ds.feature_spec == old_spec and ds.manifest.missing_indicator_fields == []
    config = {"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}
    torch_state = build_model(config, ds.feature_spec).state_dict()
    assert {k: v.shape for k, v in torch_state.items()} == {k: v.shape for k, v in build_model(config, old_spec).state_dict().items()}
    # synthetic data keeps its layout too (its generator reads a missing count as 0)
    synth = prepare_dataset(synthetic_preset("small", rows=2_000), tmp_path / "synth")
    assert synth.feature_spec.numerical == tuple(synth.schema.numerical)


def test_manifest_written_before_indicators_still_opens(tmp_path):
    ds = prepare_dataset(table([1.0, None], [1.0, 2.0]), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(**ONE_SPLIT, missing_indicators="none"))
    manifest = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    for key in ("missing_indicator_fields", "vocab_version", "split_vocab_versions"):
        manifest.pop(key)
    for key in ("missing_indicators", "negative_numerical"):
        manifest["preprocessing"].pop(key)
    (tmp_path / "ds" / "dataset.json").write_text(json.dumps(manifest))
    old = PreparedDataset.open(tmp_path / "ds")
    assert old.manifest.missing_indicator_fields == [] and old.manifest.vocab_version == 1
    assert old.feature_spec == ds.feature_spec
    part = append_split(old, "day2", table([None, 4.0], [1.0, 1.0]))  # the old layout: no indicator
    assert part.numerical.shape == (2, 2)


def test_appended_partitions_keep_the_datasets_indicators(tmp_path):
    ds = prepare_dataset(table([1.0, None] * 5, [1.0] * 10), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(min_count=1))
    part = append_split(ds, "day2", table([2.0, 3.0], [None, 1.0]))  # z missing here: no new column
    assert part.numerical.shape == (2, 3)
    np.testing.assert_array_equal(part.numerical[:, 2], [0, 0])


def test_indicator_name_clash_is_an_error(tmp_path):
    schema = DatasetSchema(label="y", categorical=["x__missing"], numerical=["x"])
    data = pa.table({"x__missing": ["a", "b"], "x": [None, 1.0], "y": [0, 1]})
    with pytest.raises(ValueError, match="clashes"):
        prepare_dataset(data, tmp_path / "ds", schema=schema, config=PrepareConfig(**ONE_SPLIT))


def test_criteo_empty_categorical_cells_and_kept_negative_counts(tmp_path):
    """As PrepareConfig documents: an empty C cell is the <MISSING> token (its own id when frequent), and by
    default a negative count is a value (-1 stays -1, no indicator), streamed and in memory alike."""
    lines = [criteo_line(i % 2, [i, -1 if i % 2 else 3] + [5] * 11, ["" if i % 4 == 0 else f"v{i % 3}"] + ["w"] * 25)
             for i in range(40)]  # fmt: skip
    path = write_lines(tmp_path / "train.txt", lines)
    config = PrepareConfig(min_count=2, split="1:0:0:0")
    streamed = prepare_dataset(path, tmp_path / "s", source_format="criteo", config=config, chunk_rows=7, block_bytes=500)
    in_memory = prepare_dataset(path, tmp_path / "m", source_format="criteo", config=config, streaming=False)
    for ds in (streamed, in_memory):
        hist = ds.split("hist")
        decoded = ds.vocabulary.decode("C1", hist.categorical[:, 0])
        assert decoded == ["<MISSING>" if i % 4 == 0 else f"v{i % 3}" for i in range(40)]
        assert ds.manifest.missing_indicator_fields == []  # no empty I cell, and negatives are values
        np.testing.assert_allclose(hist.numerical[:, 1], [-1 if i % 2 else np.log2(3) for i in range(40)], rtol=1e-6)
