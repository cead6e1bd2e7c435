"""Preprocessing: <UNK> threshold, log2, vocabulary from hist + train only, splits, reuse, atomic writes."""

import json

import numpy as np
import pyarrow as pa
import pytest

from crossadapt.data import (
    DatasetSchema, PrepareConfig, PreparedDataset, Vocabulary, append_split, prepare_dataset,
)  # fmt: skip
from crossadapt.data import prepare as prepare_module

SCHEMA = DatasetSchema(label="y", timestamp="t", categorical=["c"], numerical=["x"])


def table(values: list, times: list | None = None, x: list | None = None) -> pa.Table:
    n = len(values)
    return pa.table({
        "t": times if times is not None else list(range(n)),
        "c": values,
        "x": x if x is not None else [1.0] * n,
        "y": [i % 2 for i in range(n)],
    })  # fmt: skip


def test_unk_threshold_counts_hist_and_train_only(tmp_path):
    # 100 rows: hist 0-39, train 40-79, online 80-89, test 90-99
    values = ["common"] * 100
    values[0:10] = ["ten"] * 10  # 10 in hist -> kept at min_count 10
    values[40:49] = ["nine"] * 9  # 9 in train -> <UNK>
    values[80:90] = ["online_only"] * 10  # frequent, but only after train -> <UNK>
    values[90:100] = ["test_only"] * 10
    values[50:55] = ["late"] * 5
    values[95:99] = ["late"] * 4  # 5 in train + 4 in test: counted 5 -> <UNK>
    ds = prepare_dataset(table(values), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(min_count=10))
    vocab = ds.vocabulary
    assert vocab.fields == ["c"] and set(vocab.values("c").to_pylist()) == {"common", "ten"}
    assert ds.feature_spec.categorical[0].vocab_size == 3  # <UNK>, common, ten
    ids = np.concatenate([ds.split(s).categorical[:, 0] for s in ("hist", "train", "online", "test")])
    decoded = vocab.decode("c", ids)
    assert decoded[0] == "ten" and decoded[40] == "<UNK>" and decoded[85] == "<UNK>" and decoded[92] == "<UNK>"
    assert np.all(ids[80:90] == 0) and np.all(ids[90:95] == 0)
    assert vocab.values("c").to_pylist() == ["common", "ten"]  # most frequent first
    np.testing.assert_array_equal(vocab.counts("c"), [80 - 10 - 9 - 5, 10])


def test_min_count_per_field_and_missing_values(tmp_path):
    schema = DatasetSchema(label="y", categorical=["a", "b"])
    data = pa.table({"a": ["p", "p", None, None, "q"], "b": ["p", "p", None, None, "q"], "y": [0, 1, 0, 1, 0]})
    config = PrepareConfig(min_count=2, min_count_per_field={"b": 1}, split="1:0:0:0")
    ds = prepare_dataset(data, tmp_path / "ds", schema=schema, config=config)
    vocab = ds.vocabulary
    assert vocab.values("a").to_pylist() == ["<MISSING>", "p"]  # q seen once -> <UNK>
    assert vocab.values("b").to_pylist() == ["<MISSING>", "p", "q"]
    np.testing.assert_array_equal(ds.split("hist").categorical[:, 0], [2, 2, 1, 1, 0])


def test_log2_transform_and_missing_numbers(tmp_path):
    x = [8.0, 2.0, 0.5, None, -3.0, 1024.0, float("nan"), 3.0]
    config = PrepareConfig(min_count=1, split="1:0:0:0")
    ds = prepare_dataset(table(["a"] * 8, x=x), tmp_path / "a", schema=SCHEMA, config=config)
    np.testing.assert_allclose(ds.split("hist").numerical[:, 0], [3, 2, 0.5, 0, -3, 10, 0, np.log2(3)], rtol=1e-6)
    raw = PrepareConfig(min_count=1, split="1:0:0:0", log_transform=False)
    ds = prepare_dataset(table(["a"] * 8, x=x), tmp_path / "b", schema=SCHEMA, config=raw)
    np.testing.assert_allclose(ds.split("hist").numerical[:, 0], [8, 2, 0.5, 0, -3, 1024, 0, 3])
    assert ds.split("hist").numerical.dtype == np.float32


def test_split_ratios_and_time_order(tmp_path):
    rng = np.random.default_rng(0)
    times = rng.permutation(1000).tolist()
    values = [f"v{t % 7}" for t in times]
    ds = prepare_dataset(table(values, times), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(min_count=1))
    assert ds.manifest.splits == {"hist": 400, "train": 400, "online": 100, "test": 100}
    stamps = np.concatenate([ds.split(s).timestamp for s in ("hist", "train", "online", "test")])
    np.testing.assert_array_equal(stamps, np.arange(1000))
    decoded = ds.vocabulary.decode("c", np.concatenate([ds.split(s).categorical[:, 0] for s in ds.split_names]))
    assert decoded == [f"v{t % 7}" for t in range(1000)]  # rows moved with their time
    other = prepare_dataset(table(values, times), tmp_path / "b", schema=SCHEMA, config=PrepareConfig(split="8:1:1:0"))
    assert other.manifest.splits == {"hist": 800, "train": 100, "online": 100, "test": 0}
    assert len(other.split("test")) == 0 and other.split("test").categorical.shape == (0, 1)


def test_equal_times_keep_file_order(tmp_path):
    values = ["a", "b", "c", "d"]
    ds = prepare_dataset(table(values, [5, 1, 5, 1]), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(min_count=1, split="1:0:0:0"))
    assert ds.vocabulary.decode("c", ds.split("hist").categorical[:, 0]) == ["b", "d", "a", "c"]


def test_vocabulary_reuse_gives_same_ids(tmp_path):
    teacher = prepare_dataset(table(["a", "b", "b", "c", "c", "c"] * 10), tmp_path / "teacher", schema=SCHEMA, config=PrepareConfig(min_count=1))
    vocab = Vocabulary.load(tmp_path / "teacher")
    assert vocab.hash == teacher.vocab_hash
    # new data, different frequencies (its own vocabulary would order them differently) and a new value
    student = prepare_dataset(
        table(["new", "a", "a", "a", "b"] * 10), tmp_path / "student", schema=SCHEMA, config=PrepareConfig(min_count=1), vocabulary=vocab,
    )  # fmt: skip
    assert student.vocab_hash == teacher.vocab_hash and student.manifest.vocab_reused_fields == ["c"]
    assert student.feature_spec == teacher.feature_spec
    ids = student.split("hist").categorical[:5, 0]
    np.testing.assert_array_equal(ids, [0, *vocab.id_map("c", pa.array(["a", "a", "a", "b"]))])
    assert vocab.decode("c", ids) == ["<UNK>", "a", "a", "a", "b"]


def test_vocabulary_reuse_builds_missing_fields(tmp_path):
    prepare_dataset(table(["a", "b"] * 5), tmp_path / "t", schema=SCHEMA, config=PrepareConfig(min_count=1))
    wider = DatasetSchema(label="y", timestamp="t", categorical=["c", "d"], numerical=["x"])
    data = table(["b", "a"] * 5).append_column("d", pa.array(["z"] * 10))
    ds = prepare_dataset(data, tmp_path / "s", schema=wider, vocabulary=Vocabulary.load(tmp_path / "t"), config=PrepareConfig(min_count=1))
    assert ds.manifest.vocab_reused_fields == ["c"]
    assert ds.vocabulary.values("d").to_pylist() == ["z"]
    assert ds.vocabulary.values("c") == Vocabulary.load(tmp_path / "t").values("c")


def test_vocab_hash_is_canonical():
    a = Vocabulary({"f": pa.array(["x", "y"]), "g": pa.array(["1"])})
    assert a.hash == Vocabulary({"f": pa.array(["x", "y"]), "g": pa.array(["1"])}, {"f": np.array([5, 1])}).hash
    assert a.hash != Vocabulary({"f": pa.array(["y", "x"]), "g": pa.array(["1"])}).hash
    assert a.hash != Vocabulary({"g": pa.array(["1"]), "f": pa.array(["x", "y"])}).hash
    assert Vocabulary({"f": pa.array(["ab", "c"])}).hash != Vocabulary({"f": pa.array(["a", "bc"])}).hash
    with pytest.raises(ValueError, match="distinct"):
        Vocabulary({"f": pa.array(["x", "x"])})


def test_append_split_uses_the_dataset_vocabulary(tmp_path):
    ds = prepare_dataset(table(["a", "b"] * 20), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(min_count=1))
    part = append_split(tmp_path / "ds", "day2", table(["b", "zz", "a"], [300, 100, 200], x=[4.0, 1.0, 16.0]))
    assert len(part) == 3
    np.testing.assert_array_equal(part.timestamp, [100, 200, 300])
    assert ds.vocabulary.decode("c", part.categorical[:, 0]) == ["<UNK>", "a", "b"]
    np.testing.assert_allclose(part.numerical[:, 0], [1, 4, 2])  # same log transform
    reopened = PreparedDataset.open(tmp_path / "ds")
    assert reopened.manifest.splits["day2"] == 3 and reopened.vocab_hash == ds.vocab_hash
    with pytest.raises(FileExistsError):
        append_split(reopened, "day2", table(["a"]))
    with pytest.raises(ValueError, match="split name"):
        append_split(reopened, "../evil", table(["a"]))


def test_failed_prepare_leaves_nothing_and_keeps_the_old_dataset(tmp_path, monkeypatch):
    out = tmp_path / "ds"
    prepare_dataset(table(["a"] * 10), out, schema=SCHEMA, config=PrepareConfig(min_count=1))
    before = (out / "dataset.json").read_text()
    calls = []

    def failing_write(folder, part):
        calls.append(folder)
        if folder.name == "train":  # hist is written, then the disk fills up
            raise OSError("disk full")
        return original(folder, part)

    original = prepare_module.write_split
    monkeypatch.setattr(prepare_module, "write_split", failing_write)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(table(["b"] * 10), out, schema=SCHEMA, config=PrepareConfig(min_count=1), overwrite=True)
    with pytest.raises(OSError, match="disk full"):
        prepare_dataset(table(["b"] * 10), tmp_path / "fresh", schema=SCHEMA, config=PrepareConfig(min_count=1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp folders, no partial "fresh"
    assert (out / "dataset.json").read_text() == before
    assert calls[0].parent.parent.name.startswith(".ds.tmp-")  # built beside the target, not in it
    monkeypatch.setattr(prepare_module, "write_split", original)
    with pytest.raises(FileExistsError):
        prepare_dataset(table(["b"] * 10), out, schema=SCHEMA)
    prepare_dataset(table(["b"] * 10), out, schema=SCHEMA, config=PrepareConfig(min_count=1), overwrite=True)
    assert PreparedDataset.open(out).vocabulary.values("c").to_pylist() == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]


def test_manifest_on_disk_and_memory_maps(tmp_path):
    ds = prepare_dataset(table(["a", "b"] * 50), tmp_path / "ds", schema=SCHEMA, config=PrepareConfig(min_count=1))
    manifest = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert manifest["schema"]["label"] == "y" and manifest["vocab_hash"] == ds.vocab_hash
    assert manifest["feature_spec"]["categorical"] == [{"name": "c", "vocab_size": 3}]
    assert manifest["columns"] == ["categorical", "numerical", "label", "timestamp"]
    assert manifest["preprocessing"]["split"] == [4.0, 4.0, 1.0, 1.0]
    assert sorted(p.name for p in (tmp_path / "ds" / "splits" / "train").iterdir()) == [
        "categorical.npy", "label.npy", "numerical.npy", "timestamp.npy"]  # fmt: skip
    train = ds.split("train")
    assert isinstance(train.categorical, np.memmap) and train.categorical.dtype == np.int32
    assert train.label.dtype == np.float32 and train.timestamp.dtype == np.int64
    assert train.user is None and train.prob is None
    with pytest.raises(KeyError, match="nope"):
        ds.split("nope")
    with pytest.raises(FileNotFoundError):
        PreparedDataset.open(tmp_path)


def test_dictionary_typed_input_with_a_dictionary_per_chunk(tmp_path):
    chunks = [pa.array(["x", "y", "x"]).dictionary_encode(), pa.array(["z", None, "x"]).dictionary_encode()]
    data = pa.table({"c": pa.chunked_array(chunks), "y": [0, 1, 0, 1, 0, 1]})
    ds = prepare_dataset(data, tmp_path / "ds", schema=DatasetSchema(label="y", categorical=["c"]),
                         config=PrepareConfig(min_count=1, split="1:0:0:0"))  # fmt: skip
    decoded = ds.vocabulary.decode("c", ds.split("hist").categorical[:, 0])
    assert decoded == ["x", "y", "x", "z", "<MISSING>", "x"]
