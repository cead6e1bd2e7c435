"""Tiny clicks data and tiny seeded models shared by the distillation, co-distillation and baseline tests.

Three fields (``user`` 30 ids, ``item`` 12 ids, ``price``) and clicks drawn from a known logistic model of
them, so a model that learns beats chance and the true probability is available as a perfect teacher.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

from crossadapt.data import SplitArrays
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.spec import CategoricalField, FeatureSpec

TINY_SPEC = FeatureSpec(
    categorical=(CategoricalField(name="user", vocab_size=30), CategoricalField(name="item", vocab_size=12)),
    numerical=("price",),
)


def _tiny_clicks(n: int, seed: int = 0) -> SplitArrays:
    """``n`` time-ordered rows (timestamp = row index); ``prob`` holds the true click probability."""
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(0, 30, n), rng.integers(0, 12, n)], 1).astype(np.int64)
    num = rng.standard_normal((n, 1)).astype(np.float32)
    z = 1.2 * np.sin(cat[:, 0]) - 0.8 * (cat[:, 1] % 3 == 0) + 0.6 * num[:, 0] - 0.5
    p = 1.0 / (1.0 + np.exp(-z))
    label = (rng.random(n) < p).astype(np.float32)
    return SplitArrays(categorical=cat, numerical=num, label=label, timestamp=np.arange(n, dtype=np.int64),
                       prob=p.astype(np.float32))


def _tiny_model(dim: int = 4, seed: int = 0, arch: str = "mlp", hidden: Sequence[int] = (8,), dropout: float = 0.0):
    """A CTRModel over :data:`TINY_SPEC`, initialised from ``torch.manual_seed(seed)``."""
    torch.manual_seed(seed)
    config = parse_model_config({"architecture": arch, "embedding_dim": dim, "hidden_units": list(hidden),
                                 "dropout": dropout, "embedding_init_std": 0.05})
    return build_model(config, TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_data() -> Callable[..., SplitArrays]:
    """``tiny_data(n, seed=0)``: the same rows for the same ``(n, seed)``."""
    return _tiny_clicks


@pytest.fixture(scope="session")
def tiny_model() -> Callable[..., torch.nn.Module]:
    """``tiny_model(dim=4, seed=0, arch="mlp", hidden=(8,), dropout=0.0)``: a freshly built seeded model."""
    return _tiny_model


@pytest.fixture(scope="session")
def tiny_spec() -> FeatureSpec:
    """The feature spec of :func:`tiny_data` rows and :func:`tiny_model` models."""
    return TINY_SPEC
