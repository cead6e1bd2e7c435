"""Shared fixtures for the model-zoo tests: small specs and random batches."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from crossadapt.models import CategoricalField, FeatureSpec


def make_spec(num_categorical: int, num_numerical: int, vocab: int = 7) -> FeatureSpec:
    return FeatureSpec(
        categorical=tuple(CategoricalField(name=f"cat{i}", vocab_size=vocab + i) for i in range(num_categorical)),
        numerical=tuple(f"num{i}" for i in range(num_numerical)),
    )


def random_inputs(spec: FeatureSpec, batch: int, generator: torch.Generator | None = None):
    sizes = [field.vocab_size for field in spec.categorical]
    if sizes:
        high = torch.tensor(sizes)
        categorical = (torch.rand(batch, len(sizes), generator=generator) * high).long()
    else:
        categorical = torch.zeros(batch, 0, dtype=torch.long)
    numerical = torch.randn(batch, len(spec.numerical), generator=generator)
    return categorical, numerical


@pytest.fixture
def spec_factory() -> Callable[..., FeatureSpec]:
    return make_spec


@pytest.fixture
def inputs_factory():
    return random_inputs


@pytest.fixture(autouse=True)
def _seed_and_single_thread():
    """Seed every test; run it on one intra-op thread. These models are tiny, and on a shared 2-core box
    each multi-threaded op waits for a second core (a training step goes from ~3 ms to ~50 ms)."""
    torch.manual_seed(1234)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
