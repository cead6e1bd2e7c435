"""Serving forwards: a model traced for serving scores exactly as the model; one that only traces for one
batch shape (a shape-dependent branch) is served untraced."""

from __future__ import annotations

import numpy as np
import torch
from predictor_world import tiny_model, tiny_spec, tiny_vocabulary

from services.predictor.arms import serving_forward


def test_traced_models_score_as_the_models_at_every_batch_size() -> None:
    vocabulary = tiny_vocabulary()
    spec = tiny_spec(vocabulary)
    rng = np.random.default_rng(0)
    for architecture in ("mlp", "deepfm"):
        model = tiny_model(3, vocabulary, architecture)
        traced = serving_forward(model, spec)
        assert traced is not None, architecture
        for rows in (1, 5, 200):
            ids = torch.from_numpy(np.stack([rng.integers(0, f.vocab_size, rows) for f in spec.categorical], 1))
            numbers = torch.from_numpy(rng.normal(size=(rows, len(spec.numerical))).astype(np.float32))
            with torch.inference_mode():
                assert torch.equal(traced(ids, numbers), model(ids, numbers)), (architecture, rows)


class ShapeDependent(torch.nn.Module):
    """Doubles its answer except for batches of 8 rows: a trace (taken at 8 rows) keeps only one branch."""

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        total = categorical.float().sum(1) + numerical.sum(1)
        return total if categorical.shape[0] == 8 else 2 * total


def test_a_model_that_traces_differently_is_served_untraced() -> None:
    spec = tiny_spec(tiny_vocabulary())
    assert serving_forward(ShapeDependent(), spec) is None
