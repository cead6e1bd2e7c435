"""`crossadapt store`: a local teacher checkpoint and prepared splits land in the store the services read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from crossadapt.checkpoint import save_checkpoint
from crossadapt.models import build_model, parse_model_config
from crossadapt.transfer.switch import prepare_synthetic
from services.common import model_io
from services.common.storage import CheckpointStore, LocalObjectStore
from services.common.storage.datasets import DatasetStore

CLI = [sys.executable, "-c", "from crossadapt.cli import main; main()"]


def _cli(store: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "CROSSADAPT_STORE_URL": str(store), "CROSSADAPT_HOME": str(store.parent / "home")}
    return subprocess.run([*CLI, "store", *args], capture_output=True, text=True, env=env, timeout=120)


def test_put_model_put_split_and_ls(tmp_path: Path) -> None:
    dataset = prepare_synthetic("small", 4000, 0, tmp_path / "data")
    model = build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}),
                        dataset.feature_spec)
    save_checkpoint(tmp_path / "teacher", model, feature_spec=dataset.feature_spec, vocab_hash=dataset.vocab_hash)
    store = tmp_path / "store"

    put = _cli(store, "put-model", str(tmp_path / "teacher"), "--name", "ctr/teacher", "--vocab", str(dataset.path))
    assert put.returncode == 0, put.stderr
    assert put.stdout.strip() == "ctr/teacher/v000001"
    split = _cli(store, "put-split", str(dataset.path), "--split", "online", "--name", "ctr/stream", "--partitions", "3")
    assert split.returncode == 0, split.stderr
    listing = _cli(store, "ls")
    assert "checkpoint  ctr/teacher/v000001" in listing.stdout and "dataset     ctr/stream  (3 partitions)" in listing.stdout

    objects = LocalObjectStore(store)
    checkpoints = CheckpointStore(objects)
    loaded, published = model_io.load_model(checkpoints, "ctr/teacher")
    assert model_io.load_vocabulary(checkpoints, published).hash == dataset.vocab_hash
    online = model_io.read_all(DatasetStore(objects), "ctr/stream", spec=dataset.feature_spec)
    assert np.array_equal(online.categorical, dataset.split("online").categorical)

    bad = _cli(store, "put-split", str(dataset.path), "--split", "nope", "--name", "x")
    assert bad.returncode == 2 and "nope" in bad.stderr + bad.stdout
    # A platform error (InvalidArgumentError from the store) is one line naming the field, not a traceback.
    bad_name = _cli(store, "put-split", str(dataset.path), "--split", "online", "--name", "bad name!")
    assert bad_name.returncode == 2 and "Traceback" not in bad_name.stderr
    assert bad_name.stderr.startswith("error: ") and "bad name!" in bad_name.stderr

