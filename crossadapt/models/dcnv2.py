"""DCN-V2 (Wang et al., WWW 2021): matrix cross layers, stacked before or in parallel with a DNN.

Symbols: ``B`` batch, ``K = F * D`` flattened embedding width, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import DCNv2Config
from crossadapt.models.layers.cross import CrossNetV2
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.spec import FeatureSpec


class DCNv2(CTRModel):
    """``parallel``: ``logit = w^T [Cross(x0), DNN(x0)] + b``; ``stacked``: ``logit = w^T DNN(Cross(x0)) + b``.

    Representation: ``[B, K + H]`` (parallel) or ``[B, H]`` (stacked); ``[B, K]`` without a DNN.
    """

    architecture = "dcnv2"

    def __init__(self, config: DCNv2Config, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        input_dim = spec.num_fields * config.embedding_dim
        self.cross = CrossNetV2(input_dim, config.num_cross_layers, low_rank=config.low_rank)
        self.dnn = MLPBlock.from_config(input_dim, config) if config.hidden_units else None
        self.stacked = config.structure == "stacked"
        if self.dnn is None:
            head_dim = input_dim
        elif self.stacked:
            head_dim = self.dnn.output_dim
        else:
            head_dim = input_dim + self.dnn.output_dim
        self.output = nn.Linear(head_dim, 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        x0 = fields.flatten(1)
        crossed = self.cross(x0)
        if self.dnn is None:
            representation = crossed
        elif self.stacked:
            representation = self.dnn(crossed)
        else:
            representation = torch.cat([crossed, self.dnn(x0)], dim=1)
        return self.output(representation).squeeze(-1), representation
