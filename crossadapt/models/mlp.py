"""MLP: a plain DNN over the concatenated field embeddings (the CrossAdapt paper's teacher).

Symbols: ``B`` batch, ``F`` fields, ``D`` width, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import MLPConfig
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.spec import FeatureSpec


class MLP(CTRModel):
    """``logit = w^T DNN(flatten(E)) + b``.

    Representation: the last hidden layer ``[B, H]`` (``H = 4`` for the paper's ``[64, 32, 4]`` teacher;
    the flattened embeddings ``[B, F * D]`` if ``hidden_units`` is empty).
    """

    architecture = "mlp"

    def __init__(self, config: MLPConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        self.dnn = MLPBlock.from_config(spec.num_fields * config.embedding_dim, config)
        self.output = nn.Linear(self.dnn.output_dim, 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        hidden = self.dnn(fields.flatten(1))
        return self.output(hidden).squeeze(-1), hidden
