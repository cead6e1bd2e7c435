"""Tiny prepared synthetic dataset and factories shared by the training and checkpoint tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from crossadapt.data import PreparedDataset, prepare_dataset, synthetic_preset
from crossadapt.models import build_model
from crossadapt.training import TrainConfig

ROWS = 6000


@pytest.fixture(scope="session")
def dataset(tmp_path_factory) -> PreparedDataset:
    """6000 rows (hist 2400, train 2400, online 600, test 600), 8 categorical + 3 numerical fields,
    click, conversion, user and the true click probability."""
    folder: Path = tmp_path_factory.mktemp("data") / "small"
    return prepare_dataset(synthetic_preset("small", rows=ROWS, conversion_rate=0.3, seed=3), folder)


@pytest.fixture
def make_model(dataset):
    """``make_model(arch="mlp", seed=0, sparse=False, **config overrides)``: a seeded tiny model."""

    def factory(arch: str = "mlp", *, seed: int = 0, sparse: bool = False, **overrides):
        torch.manual_seed(seed)
        config = {"architecture": arch, "embedding_dim": 4, "hidden_units": [16, 8]} | overrides
        return build_model(config, dataset.feature_spec, sparse=sparse)

    return factory


@pytest.fixture
def fast_config():
    """``fast_config(**overrides)``: small batches, no progress bar, one thread.

    One thread because tiny models gain nothing from more, and on a shared 2-core machine two
    OpenMP threads that wait for each other make every step tens of times slower.
    """

    def factory(**overrides) -> TrainConfig:
        defaults = {"batch_size": 256, "eval_batch_size": 4096, "progress": False, "num_threads": 1}
        return TrainConfig(**(defaults | overrides))

    return factory


@pytest.fixture(autouse=True)
def _restore_torch_threads():
    """Trainer sets torch's global thread count; give other tests back what they had."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
