"""Checkpoint folders: round trip, integrity checks, atomic publication."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from crossadapt import checkpoint as C
from crossadapt.training import predict_proba


@pytest.fixture
def saved(tmp_path, dataset, make_model):
    model = make_model("fibinet", seed=1)
    path = tmp_path / "ckpt"
    manifest = C.save_checkpoint(
        path, model, feature_spec=dataset.feature_spec, vocab_hash=dataset.vocab_hash,
        metrics={"auc": 0.7, "rows": 10}, parent="s3://models/teacher", extra={"target": "click"},
    )
    return path, model, manifest


def test_round_trip_gives_identical_predictions_and_manifest(saved, dataset):
    path, model, manifest = saved
    loaded = C.load_checkpoint(path, expected_vocab_hash=dataset.vocab_hash)
    test = dataset.split("test")
    np.testing.assert_array_equal(predict_proba(loaded.model, test), predict_proba(model, test))
    assert loaded.manifest == manifest == C.read_manifest(path)
    assert manifest.architecture == "fibinet" and manifest.config == model.config.model_dump(mode="json")
    assert manifest.feature_spec == dataset.feature_spec and manifest.vocab_hash == dataset.vocab_hash
    assert manifest.metrics == {"auc": 0.7, "rows": 10} and manifest.parent == "s3://models/teacher"
    assert manifest.format_version == C.FORMAT_VERSION and manifest.extra == {"target": "click"}
    tensors = path / C.TENSORS_NAME
    assert manifest.files[C.TENSORS_NAME].sha256 == hashlib.sha256(tensors.read_bytes()).hexdigest()
    assert manifest.files[C.TENSORS_NAME].size == tensors.stat().st_size
    assert sorted(p.name for p in path.iterdir()) == [C.MANIFEST_NAME, C.TENSORS_NAME]
    assert not loaded.model.training


def test_tampered_tensor_file_fails_checksum(saved):
    path, _, _ = saved
    tensors = path / C.TENSORS_NAME
    data = bytearray(tensors.read_bytes())
    data[-3] ^= 0x01  # same size, one bit of one weight flipped
    tensors.write_bytes(bytes(data))
    with pytest.raises(C.ChecksumMismatchError, match="sha256"):
        C.load_checkpoint(path)
    tensors.write_bytes(bytes(data[:-8]))
    with pytest.raises(C.ChecksumMismatchError, match="size"):
        C.load_checkpoint(path)
    tensors.unlink()
    with pytest.raises(C.ChecksumMismatchError, match="missing"):
        C.load_checkpoint(path)


def test_missing_and_malformed_checkpoints(tmp_path, saved):
    with pytest.raises(C.CheckpointNotFoundError, match="no such checkpoint folder"):
        C.load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(C.CheckpointNotFoundError, match="manifest.json"):
        C.read_manifest(tmp_path / "empty")
    path, _, _ = saved
    manifest_path = path / C.MANIFEST_NAME
    raw = json.loads(manifest_path.read_text())
    manifest_path.write_text("{not json")
    with pytest.raises(C.ManifestError, match="unreadable JSON"):
        C.read_manifest(path)
    manifest_path.write_text(json.dumps(raw | {"format_version": 99}))
    with pytest.raises(C.ManifestError, match="format_version 99"):
        C.read_manifest(path)
    manifest_path.write_text(json.dumps(raw | {"vocab_hash": None}))
    with pytest.raises(C.ManifestError, match="vocab_hash"):
        C.read_manifest(path)


def test_vocab_hash_mismatch_is_refused(saved):
    path, _, _ = saved
    with pytest.raises(C.VocabHashMismatchError, match="vocabulary"):
        C.load_checkpoint(path, expected_vocab_hash="0" * 64)


def test_crash_mid_write_leaves_no_visible_checkpoint(tmp_path, dataset, make_model, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(C, "build_manifest", crash)  # tensors are written, the manifest never is
    target = tmp_path / "ckpt"
    with pytest.raises(OSError, match="simulated"):
        C.save_checkpoint(target, make_model(), feature_spec=dataset.feature_spec, vocab_hash=dataset.vocab_hash)
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary sibling is cleaned up too


def test_hard_crash_before_rename_is_invisible_to_readers(tmp_path, dataset, make_model, monkeypatch):
    """A process killed after writing everything but before the rename leaves only a hidden temp folder."""

    def killed(tmp, target):
        raise KeyboardInterrupt  # stands in for SIGKILL: nothing after this point runs

    monkeypatch.setattr(C, "_publish", killed)
    monkeypatch.setattr(C.shutil, "rmtree", lambda *a, **k: None)  # a killed process cleans nothing up
    target = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(target, make_model(), feature_spec=dataset.feature_spec, vocab_hash=dataset.vocab_hash)
    leftovers = list(tmp_path.iterdir())
    assert len(leftovers) == 1 and leftovers[0].name.startswith(".ckpt.tmp-")
    with pytest.raises(C.CheckpointNotFoundError):
        C.load_checkpoint(target)


def test_existing_target_needs_overwrite(saved, dataset, make_model):
    path, _, first = saved
    replacement = make_model("mlp", seed=5)
    with pytest.raises(C.CheckpointExistsError, match="overwrite"):
        C.save_checkpoint(path, replacement, feature_spec=dataset.feature_spec, vocab_hash=dataset.vocab_hash)
    C.save_checkpoint(path, replacement, feature_spec=dataset.feature_spec, vocab_hash=dataset.vocab_hash,
                      overwrite=True)
    loaded = C.load_checkpoint(path)
    assert loaded.manifest.architecture == "mlp" and loaded.manifest.parent is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]  # the old folder is gone


def test_wrong_feature_spec_is_refused(tmp_path, dataset, make_model):
    other = dataset.feature_spec.model_copy(update={"numerical": ()})
    with pytest.raises(C.CheckpointError, match="feature_spec"):
        C.save_checkpoint(tmp_path / "x", make_model(), feature_spec=other, vocab_hash=dataset.vocab_hash)
    assert not (tmp_path / "x").exists()


def test_build_manifest_and_verify_files_are_reusable(tmp_path, dataset):
    (tmp_path / "a.bin").write_bytes(b"hello")
    (tmp_path / "b.bin").write_bytes(b"")
    manifest = C.build_manifest(
        {"a.bin": tmp_path / "a.bin", "b.bin": tmp_path / "b.bin"}, architecture="mlp", config={"architecture": "mlp"},
        feature_spec=dataset.feature_spec, vocab_hash="abc", created_at="2026-01-01T00:00:00+00:00",
    )
    assert manifest.files["a.bin"].sha256 == hashlib.sha256(b"hello").hexdigest()
    assert manifest.files["b.bin"].size == 0
    C.verify_files(tmp_path, manifest)
    (tmp_path / "a.bin").write_bytes(b"hellO")
    with pytest.raises(C.ChecksumMismatchError, match="a.bin"):
        C.verify_files(tmp_path, manifest)
