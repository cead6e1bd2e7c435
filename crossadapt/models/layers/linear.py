"""First-order ("wide", logistic-regression) terms.

Symbols: ``B`` batch, ``C`` categorical fields, ``N`` numerical fields.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.layers.embedding import FeatureEmbedding
from crossadapt.models.spec import FeatureSpec


class FirstOrderTerm(nn.Module):
    """``sum_k w[field k, id_k] + sum_n w_n * x_n``: a width-1 fused embedding plus a linear map of the numbers.

    It is a :class:`FeatureEmbedding` of width 1 (one weight per categorical row, one per numerical field),
    so it shares the fused single-lookup table, the sparse-gradient option and per-field addressing, and
    :meth:`CTRModel.embedding_parameters` counts it with the embeddings. The global bias lives in the
    model's output layer, not here.

    Shapes: ``categorical [B, C]``, ``numerical [B, N] -> [B]``.
    """

    def __init__(self, spec: FeatureSpec, *, init_std: float = 1e-4, sparse: bool = False):
        super().__init__()
        self.weights = FeatureEmbedding(spec, 1, init_std=init_std, sparse=sparse)

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        return self.weights(categorical, numerical).sum(dim=(1, 2))
