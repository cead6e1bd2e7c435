"""A vocabulary that grows with appended partitions: thresholds, pending counts, versions, checkpoints."""

import numpy as np
import pyarrow as pa
import pytest
from data_sources import criteo_line, write_lines

from crossadapt.data import DatasetSchema, PrepareConfig, PreparedDataset, Vocabulary, append_split, prepare_dataset
from crossadapt.data.growth import GrowthConfig, ids_for_sizes, load_pending
from crossadapt.data.vocabulary import VocabularyRef

SCHEMA = DatasetSchema(label="y", timestamp="t", categorical=["c", "d"])


def table(c: list, d: list | None = None, start: int = 0) -> pa.Table:
    n = len(c)
    return pa.table({"t": list(range(start, start + n)), "c": c, "d": d or ["k"] * n, "y": [i % 2 for i in range(n)]})


@pytest.fixture
def dataset(tmp_path):
    return prepare_dataset(table(["a", "b"] * 20), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(min_count=1))


def test_new_values_get_ids_once_they_pass_the_threshold(dataset):
    v1 = dataset.vocabulary
    assert v1.version == 1 and dataset.manifest.vocab_version == 1
    day2 = table(["new"] * 3 + ["rare"] * 2 + ["a"], start=100)
    part = append_split(dataset, "day2", day2, growth=GrowthConfig(min_count=3))
    ds = PreparedDataset.open(dataset.path)
    v2 = ds.vocabulary
    assert v2.version == 2 and ds.manifest.vocab_version == 2 and ds.vocab_hash == v2.hash != v1.hash
    assert v2.values("c").to_pylist() == ["a", "b", "new"]  # appended: old ids unchanged
    assert ds.feature_spec.categorical[0].vocab_size == 4 and ds.feature_spec.categorical[1].vocab_size == 2
    assert v2.decode("c", part.categorical[:, 0]) == ["new"] * 3 + ["<UNK>"] * 2 + ["a"]
    assert ds.manifest.split_vocab_versions == {"day2": 2}
    assert load_pending(ds.path / "vocab", v2)["c"][0].to_pylist() == ["rare"]
    # the pending sightings count: 2 earlier + 1 now reach 3
    part = append_split(ds, "day3", table(["rare", "b"], start=200), growth=GrowthConfig(min_count=3))
    v3 = PreparedDataset.open(dataset.path).vocabulary
    assert v3.version == 3 and v3.values("c").to_pylist() == ["a", "b", "new", "rare"]
    assert v3.decode("c", part.categorical[:, 0]) == ["rare", "b"]
    assert [h.version for h in v3.history] == [1, 2, 3] and v3.history[0].hash == v1.hash
    # earlier splits are untouched and still read as before
    np.testing.assert_array_equal(PreparedDataset.open(dataset.path).split("day2").categorical[:, 0], [3, 3, 3, 0, 0, 1])


def test_without_growth_new_values_stay_unknown(dataset):
    part = append_split(dataset, "day2", table(["new"] * 30, start=100))
    assert np.all(part.categorical[:, 0] == 0)
    ds = PreparedDataset.open(dataset.path)
    assert ds.manifest.vocab_version == 1 and ds.vocab_hash == dataset.vocab_hash
    assert not (ds.path / "vocab" / "pending").exists()


def test_per_field_thresholds_and_growing_fields(dataset):
    day2 = table(["x"] * 2, d=["m"] * 2, start=100)
    append_split(dataset, "day2", day2, growth=GrowthConfig(min_count=5, min_count_per_field={"d": 2}))
    v = PreparedDataset.open(dataset.path).vocabulary
    assert v.values("c").to_pylist() == ["a", "b"] and v.values("d").to_pylist() == ["k", "m"]
    append_split(dataset.path, "day3", table(["y"] * 4, d=["q"] * 4, start=200), growth=GrowthConfig(min_count=1, fields=["c"]))
    v = PreparedDataset.open(dataset.path).vocabulary
    # "x" was pending (2 sightings, threshold 5); at threshold 1 it is admitted after "y" (4 sightings)
    assert v.values("c").to_pylist() == ["a", "b", "y", "x"] and v.values("d").to_pylist() == ["k", "m"]
    with pytest.raises(ValueError, match="ghost"):
        append_split(dataset.path, "day4", table(["z"], start=300), growth=GrowthConfig(fields=["ghost"]))


def test_growth_from_a_streamed_file(tmp_path):
    day1 = write_lines(tmp_path / "day1.txt", [criteo_line(i % 2, [i] * 13, [f"v{i % 4}"] * 26) for i in range(40)])
    ds = prepare_dataset(day1, tmp_path / "ds", source_format="criteo", config=PrepareConfig(min_count=1))
    lines = [criteo_line(i % 2, [1] * 13, [f"w{i % 2}"] + [f"v{i % 4}"] * 25) for i in range(30)]
    day2 = write_lines(tmp_path / "day2.txt", lines)
    part = append_split(ds, "day2", day2, source_format="criteo", growth=GrowthConfig(min_count=10), chunk_rows=7, block_bytes=300)
    grown = PreparedDataset.open(ds.path)
    assert grown.vocabulary.values("C1").to_pylist()[-2:] == ["w0", "w1"]
    assert grown.feature_spec.categorical[0].vocab_size == 7 and grown.feature_spec.categorical[1].vocab_size == 5
    assert grown.vocabulary.decode("C1", part.categorical[:4, 0]) == ["w0", "w1", "w0", "w1"]


def test_older_models_read_grown_ids_as_unknown(dataset):
    part = append_split(dataset, "day2", table(["new", "a", "new"], start=100), growth=GrowthConfig(min_count=1))
    old_sizes = [f.vocab_size for f in dataset.feature_spec.categorical]
    np.testing.assert_array_equal(ids_for_sizes(np.asarray(part.categorical), old_sizes)[:, 0], [0, 1, 0])
    np.testing.assert_array_equal(np.asarray(part.categorical)[:, 0], [3, 1, 3])


def test_versions_resolve_by_hash_and_a_checkpoint_names_its_version(dataset, tmp_path):
    import torch

    from crossadapt.checkpoint import load_checkpoint, save_checkpoint
    from crossadapt.models import build_model

    v1 = dataset.vocabulary
    torch.manual_seed(0)
    model = build_model({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [4]}, dataset.feature_spec)
    save_checkpoint(tmp_path / "ckpt", model, feature_spec=dataset.feature_spec, vocab_hash=v1.hash,
                    extra={"vocab_version": v1.version})  # fmt: skip
    append_split(dataset, "day2", table(["new"] * 3, start=100), growth=GrowthConfig(min_count=1))
    latest = Vocabulary.load(dataset.path)
    manifest = load_checkpoint(tmp_path / "ckpt").manifest
    named = latest.resolve(VocabularyRef(version=manifest.extra["vocab_version"], hash=manifest.vocab_hash))
    assert named.hash == v1.hash and named.sizes == v1.sizes and named.version == 1
    assert latest.resolve(manifest.vocab_hash).values("c") == v1.values("c")
    assert latest.version_of(latest.hash) == 2 and latest.ref == VocabularyRef(version=2, hash=latest.hash)
    with pytest.raises(ValueError, match="not a version"):
        latest.resolve(VocabularyRef(version=2, hash=v1.hash))
    with pytest.raises(ValueError, match="not a version"):
        latest.resolve("0" * 64)


def test_grow_rejects_known_or_repeated_values():
    vocab = Vocabulary({"f": pa.array(["a", "b"])})
    with pytest.raises(ValueError, match="distinct"):
        vocab.grow({"f": (pa.array(["a"]), np.array([1]))})
    with pytest.raises(ValueError, match="distinct"):
        vocab.grow({"f": (pa.array(["c", "c"]), np.array([1, 1]))})
    with pytest.raises(KeyError):
        vocab.grow({"g": (pa.array(["c"]), np.array([1]))})
    grown = vocab.grow({"f": (pa.array(["c"]), np.array([4]))})
    assert grown.at_version(1).hash == vocab.hash and grown.id_map("f", pa.array(["c", "a", "zz"])).tolist() == [3, 1, 0]


def test_pending_values_are_capped_by_frequency(dataset):
    day2 = table(["p"] * 3 + ["q"] * 2 + ["r"], start=100)
    append_split(dataset, "day2", day2, growth=GrowthConfig(min_count=10, max_pending=2))
    ds = PreparedDataset.open(dataset.path)
    values, counts = load_pending(ds.path / "vocab", ds.vocabulary)["c"]
    assert values.to_pylist() == ["p", "q"] and counts.tolist() == [3, 2]
    assert ds.manifest.vocab_version == 1  # nothing admitted: the same version


def test_a_grown_models_tables_name_their_vocabulary_version(dataset):
    from crossadapt.data.growth import version_for_sizes

    v1 = dataset.vocabulary
    append_split(dataset, "day2", table(["new"] * 3, start=100), growth=GrowthConfig(min_count=3))
    v2 = PreparedDataset.open(dataset.path).vocabulary
    assert version_for_sizes(v2, v1.sizes) == VocabularyRef(version=1, hash=v1.hash)
    assert version_for_sizes(v2, v2.sizes) == v2.ref and v2.ref.version == 2
    with pytest.raises(ValueError, match="no version"):
        version_for_sizes(v2, {"c": 99, "d": 2})
