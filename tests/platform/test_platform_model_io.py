"""model_io: core models and splits round-trip through the stores with their tables, vocabulary and schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crossadapt.data.arrays import SplitArrays
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.spec import CategoricalField, FeatureSpec
from services.common import model_io
from services.common.errors import FailedPreconditionError, InvalidArgumentError
from services.common.storage import CheckpointStore, LocalObjectStore
from services.common.storage.datasets import DatasetStore
from services.common.storage.tables import read_table

SPEC = FeatureSpec(categorical=(CategoricalField(name="user", vocab_size=30), CategoricalField(name="item", vocab_size=12)),
                   numerical=("price",))


def _rows(n: int, seed: int = 0) -> SplitArrays:
    rng = np.random.default_rng(seed)
    return SplitArrays(categorical=np.stack([rng.integers(0, 30, n), rng.integers(0, 12, n)], 1),
                       numerical=rng.standard_normal((n, 1)).astype(np.float32),
                       label=(rng.random(n) < 0.3).astype(np.float32), timestamp=np.arange(n, dtype=np.int64),
                       teacher_logit=rng.standard_normal(n).astype(np.float32))


@pytest.fixture
def stores(tmp_path: Path) -> tuple[CheckpointStore, DatasetStore]:
    objects = LocalObjectStore(tmp_path / "store")
    return CheckpointStore(objects), DatasetStore(objects)


def test_a_model_round_trips_with_its_tables(stores: tuple[CheckpointStore, DatasetStore]) -> None:
    checkpoints, _ = stores
    torch.manual_seed(0)
    model = build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}), SPEC)
    published = model_io.publish_model(checkpoints, "t/teacher", model, feature_spec=SPEC, vocab_hash="h" * 8,
                                       parent="origin")
    loaded, ref = model_io.load_model(checkpoints, "t/teacher")
    assert ref.ref == published.ref == "t/teacher/v000001" and ref.manifest.parent == "origin"
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    assert np.array_equal(read_table(checkpoints, published, "user"), model.embedding.get_table("user").detach().numpy())
    assert model_io.load_vocabulary(checkpoints, published) is None


def test_a_table_checkpoint_is_not_a_model(stores: tuple[CheckpointStore, DatasetStore]) -> None:
    from services.common.storage.tables import upload_table_checkpoint

    checkpoints, _ = stores
    upload_table_checkpoint(checkpoints, "t/tables", {"user": np.zeros((30, 4), np.float32)}, num_shards=2)
    with pytest.raises(FailedPreconditionError, match="holds no model"):
        model_io.load_model(checkpoints, "t/tables")


def test_a_split_round_trips_in_partitions_with_its_spec(stores: tuple[CheckpointStore, DatasetStore]) -> None:
    _, datasets = stores
    rows = _rows(1000)
    assert len(model_io.write_split(datasets, "d/train", rows, SPEC, vocab_hash="abc", partitions=4)) == 4
    back = model_io.read_all(datasets, "d/train", spec=SPEC)
    for name in ("categorical", "numerical", "label", "timestamp", "teacher_logit"):
        assert np.array_equal(getattr(back, name), getattr(rows, name)), name
    assert back.user is None  # the categorical field `user` is a feature, not the optional user column
    assert model_io.dataset_feature_spec(datasets, "d/train") == (SPEC, "abc")


def test_a_partition_with_another_schema_is_refused_by_name(stores: tuple[CheckpointStore, DatasetStore]) -> None:
    _, datasets = stores
    model_io.write_split(datasets, "d/stream", _rows(100), SPEC)
    other = FeatureSpec(categorical=(CategoricalField(name="user", vocab_size=30),), numerical=("price",))
    rows = _rows(50)
    model_io.write_split(datasets, "d/stream", SplitArrays(categorical=rows.categorical[:, :1], numerical=rows.numerical,
                                                          label=rows.label), other,
                         start=model_io._EPOCH.replace(day=2))
    with pytest.raises(InvalidArgumentError, match=r"partition d/stream/ts=20260102T000000Z has schema 1 categorical"):
        list(model_io.read_split(datasets, "d/stream", spec=SPEC))


def test_a_field_named_like_a_present_split_column_is_refused(stores: tuple[CheckpointStore, DatasetStore]) -> None:
    _, datasets = stores
    spec = FeatureSpec(categorical=(CategoricalField(name="timestamp", vocab_size=30),
                                    CategoricalField(name="item", vocab_size=12)), numerical=("price",))
    with pytest.raises(InvalidArgumentError, match="collide"):
        model_io.write_split(datasets, "d/bad", _rows(10), spec)


def test_small_tables_are_one_shard_and_large_ones_are_split(stores: tuple[CheckpointStore, DatasetStore],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoints, _ = stores
    monkeypatch.setattr(model_io, "ROWS_PER_SHARD", 16)  # `user` has 30 rows: two shards; `item` 12: one
    model = build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}), SPEC)
    published = model_io.publish_model(checkpoints, "t/sharded", model, feature_spec=SPEC, vocab_hash="h")
    tables = published.manifest.extra["tables"]
    assert len(tables["user"]["shards"]) == 2 and len(tables["item"]["shards"]) == 1
    for name in model.embedding.table_names():
        assert np.array_equal(read_table(checkpoints, published, name), model.embedding.get_table(name).numpy())


def test_a_model_s_tables_are_stored_once_as_ranges_of_its_weights(stores: tuple[CheckpointStore, DatasetStore]) -> None:
    """The tables are row ranges of model.safetensors (no second copy); a range is verified by its own digest, so a
    flipped byte in a table fails that table's read, and one elsewhere in the file fails only the model's load."""
    from services.common.errors import DataLossError

    checkpoints, _ = stores
    torch.manual_seed(0)
    model = build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}), SPEC)
    published = model_io.publish_model(checkpoints, "t/once", model, feature_spec=SPEC, vocab_hash="h")
    files = published.manifest.files
    assert set(files) == {"model.safetensors"}
    shards = [shard for layout in published.manifest.extra["tables"].values() for shard in layout["shards"]]
    assert shards and all(shard["file"] == "model.safetensors" and shard["offset"] > 0 for shard in shards)
    # The ranges hold the embedding rows and nothing else: 30 + 12 rows of 4 float32 and the one numerical vector.
    assert sum(shard["rows"] for shard in shards) * 4 * 4 == (30 + 12 + 1) * 16
    key = "checkpoints/t/once/v000001/model.safetensors"
    original = checkpoints.objects.get_bytes(key)
    item = published.manifest.extra["tables"]["item"]["shards"][0]
    flipped = bytearray(original)
    flipped[item["offset"] + 5] ^= 0x01
    checkpoints.objects.put_bytes(key, bytes(flipped))
    with pytest.raises(DataLossError, match="sha256"):
        read_table(checkpoints, published, "item")
    assert np.array_equal(read_table(checkpoints, published, "user"), model.embedding.get_table("user").numpy())
    with pytest.raises(DataLossError):
        model_io.load_model(checkpoints, "t/once")
    checkpoints.objects.put_bytes(key, original)
    assert np.array_equal(read_table(checkpoints, published, "item"), model.embedding.get_table("item").numpy())


def test_a_table_of_another_dtype_is_written_as_shard_files(stores: tuple[CheckpointStore, DatasetStore]) -> None:
    # Ranges are float32 rows; a float64 model's tables are written (as float32) beside it, as before.
    checkpoints, _ = stores
    model = build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}), SPEC)
    model = model.double()
    published = model_io.publish_model(checkpoints, "t/f64", model, feature_spec=SPEC, vocab_hash="h")
    shards = published.manifest.extra["tables"]["user"]["shards"]
    assert [shard["file"] for shard in shards] == ["tables/user/shard-00000.safetensors"]
    assert shards[0].get("offset") is None and "tables/user/shard-00000.safetensors" in published.manifest.files
    expected = model.embedding.get_table("user").float().numpy()
    assert np.array_equal(read_table(checkpoints, published, "user"), expected)


def test_a_range_shard_must_carry_its_digest_and_lie_inside_its_file() -> None:
    from pydantic import ValidationError

    from crossadapt.checkpoint import CheckpointManifest, FileEntry
    from services.common.errors import DataLossError
    from services.common.storage.tables import ShardEntry, table_layouts

    with pytest.raises(ValidationError, match="offset and sha256"):
        ShardEntry(file="model.safetensors", start=0, rows=3, offset=64)
    shard = {"file": "model.safetensors", "start": 0, "rows": 30, "offset": 64, "sha256": "0" * 64}
    manifest = CheckpointManifest(
        architecture="mlp", config={}, feature_spec=SPEC, vocab_hash="h",
        files={"model.safetensors": FileEntry(sha256="0" * 64, size=64 + 30 * 16 - 1)}, created_at="2026-12-06T00:00:00Z",
        extra={"tables": {"user": {"rows": 30, "dim": 4, "shards": [shard]}}})
    with pytest.raises(DataLossError, match="beyond model.safetensors"):
        table_layouts(manifest, "t/bad")


def test_a_model_published_into_a_claimed_version_lists_what_was_uploaded(
        stores: tuple[CheckpointStore, DatasetStore]) -> None:
    """An operation's output (a claimed version): every file is listed with the sha256 and size of the bytes
    stored, the model reads back equal, and a flipped byte in a stored file is DATA_LOSS on read."""
    import hashlib

    from services.common.errors import DataLossError

    checkpoints, _ = stores
    torch.manual_seed(0)
    model = build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}), SPEC)
    version = checkpoints.claim_version("t/student", "op-1")
    published = model_io.publish_model(checkpoints, "t/student", model, feature_spec=SPEC, vocab_hash="h" * 8,
                                       version=version, operation_id="op-1")
    files = published.manifest.files
    assert files and published.manifest.extra["operation_id"] == "op-1"
    for relpath, entry in files.items():
        stored = checkpoints.objects.get_bytes(f"checkpoints/t/student/{version}/{relpath}")
        assert (entry.sha256, entry.size) == (hashlib.sha256(stored).hexdigest(), len(stored)), relpath
    loaded, _ = model_io.load_model(checkpoints, "t/student", version)
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    relpath = max(files, key=lambda name: files[name].size)
    key = f"checkpoints/t/student/{version}/{relpath}"
    data = bytearray(checkpoints.objects.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    checkpoints.objects.put_bytes(key, bytes(data))
    with pytest.raises(DataLossError):
        model_io.load_model(checkpoints, "t/student", version)
