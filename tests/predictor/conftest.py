"""Fixtures of the predictor tests: tiny checkpoints in a local store, and one predictor process for the session."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from predictor_world import PredictorProcess, publish_tiny, tiny_vocabulary  # noqa: E402

from services.common.storage import CheckpointStore, LocalObjectStore  # noqa: E402

SERVER_SETTINGS = {
    "teacher": "ctr/teacher/v000001", "student": "ctr/student/v000001", "max_batch_rows": "64",
    "flush_interval_s": "3600", "metrics_refresh_s": "0.5", "bootstrap_replicates": "100", "kept_rows": "100000",
    "inline_rows": "16",  # batches above 16 rows are scored in a worker thread: both paths run
}


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A local store with ctr/teacher v1, ctr/student v1 and v2, a model reading a field the requests lack
    (ctr/wider), one published without its vocabulary (ctr/novocab), and one with its own smaller vocabulary
    over fewer fields (ctr/narrow: C2, C1 and I1)."""
    import pyarrow as pa

    from crossadapt.data.vocabulary import Vocabulary

    root = tmp_path_factory.mktemp("predictor-store")
    checkpoints = CheckpointStore(LocalObjectStore(root))
    publish_tiny(checkpoints, "ctr/teacher", seed=0)
    publish_tiny(checkpoints, "ctr/student", seed=1)
    publish_tiny(checkpoints, "ctr/student", seed=2, architecture="deepfm")
    base = tiny_vocabulary()
    wider = Vocabulary({**{f: base.values(f) for f in base.fields}, "C9": pa.array(["q"])})
    publish_tiny(checkpoints, "ctr/wider", seed=3, vocabulary=wider)
    from predictor_world import tiny_model, tiny_spec
    from services.common.model_io import publish_model

    publish_model(checkpoints, "ctr/novocab", tiny_model(4, base), feature_spec=tiny_spec(base), vocab_hash=base.hash)
    narrow = Vocabulary({"C2": pa.array([f"ad-{i}" for i in range(11, 3, -1)]), "C1": pa.array(["site-3", "site-1"])})
    publish_tiny(checkpoints, "ctr/narrow", seed=5, vocabulary=narrow, numerical=("I1",))
    return root


@pytest.fixture(scope="session")
def checkpoints(store_dir: Path) -> CheckpointStore:
    return CheckpointStore(LocalObjectStore(store_dir))


@pytest.fixture(scope="session")
def predictor(store_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PredictorProcess]:
    process = PredictorProcess(tmp_path_factory.mktemp("predictor"), store_dir, dict(SERVER_SETTINGS)).start()
    yield process
    process.stop()
