"""DCN (Wang et al., ADKDD 2017): a vector cross network in parallel with a DNN.

Symbols: ``B`` batch, ``K = F * D`` flattened embedding width, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import DCNConfig
from crossadapt.models.layers.cross import CrossNet
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.spec import FeatureSpec


class DCN(CTRModel):
    """``logit = w^T [CrossNet(x0), DNN(x0)] + b`` with ``x0 = flatten(E)``.

    Representation: ``[B, K + H]``, the concatenated cross and deep outputs (``[B, K]`` without a DNN).
    """

    architecture = "dcn"

    def __init__(self, config: DCNConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        input_dim = spec.num_fields * config.embedding_dim
        self.cross = CrossNet(input_dim, config.num_cross_layers)
        self.dnn = MLPBlock.from_config(input_dim, config) if config.hidden_units else None
        self.output = nn.Linear(input_dim + (self.dnn.output_dim if self.dnn is not None else 0), 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        x0 = fields.flatten(1)
        parts = [self.cross(x0)]
        if self.dnn is not None:
            parts.append(self.dnn(x0))
        representation = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        return self.output(representation).squeeze(-1), representation
