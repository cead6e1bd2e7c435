"""DeepFM (Guo et al., IJCAI 2017): first-order + factorisation machine + DNN on a shared embedding.

Symbols: ``B`` batch, ``F`` fields, ``D`` width, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import DeepFMConfig
from crossadapt.models.layers.fm import FactorizationMachine
from crossadapt.models.layers.linear import FirstOrderTerm
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.spec import FeatureSpec


class DeepFM(CTRModel):
    """``logit = first_order + sum_{i<j} <e_i, e_j> + w^T DNN(flatten(E)) + b``.

    Representation: the DNN's last hidden layer ``[B, H]``.
    """

    architecture = "deepfm"

    def __init__(self, config: DeepFMConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        self.first_order = FirstOrderTerm(spec, init_std=config.embedding_init_std, sparse=sparse)
        self.fm = FactorizationMachine()
        self.dnn = MLPBlock.from_config(spec.num_fields * config.embedding_dim, config)
        self.output = nn.Linear(self.dnn.output_dim, 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        hidden = self.dnn(fields.flatten(1))
        logits = self.output(hidden).squeeze(-1) + self.fm(fields) + self.first_order(categorical, numerical)
        return logits, hidden
