"""Wide & Deep (Cheng et al., DLRS 2016): a first-order wide part plus a DNN.

Symbols: ``B`` batch, ``F`` fields, ``D`` width, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import WideDeepConfig
from crossadapt.models.layers.linear import FirstOrderTerm
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.spec import FeatureSpec


class WideDeep(CTRModel):
    """``logit = sum_k w_{k, id_k} + sum_n w_n x_n + w^T DNN(flatten(E)) + b``.

    The wide part is a width-1 fused embedding (counted with the embedding parameters).
    Representation: the DNN's last hidden layer ``[B, H]``.
    """

    architecture = "widedeep"

    def __init__(self, config: WideDeepConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        self.wide = FirstOrderTerm(spec, init_std=config.embedding_init_std, sparse=sparse)
        self.dnn = MLPBlock.from_config(spec.num_fields * config.embedding_dim, config)
        self.output = nn.Linear(self.dnn.output_dim, 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        hidden = self.dnn(fields.flatten(1))
        logits = self.output(hidden).squeeze(-1) + self.wide(categorical, numerical)
        return logits, hidden
