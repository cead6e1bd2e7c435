"""xDeepFM (Lian et al., KDD 2018): compressed interaction network + first-order term + DNN.

Symbols: ``B`` batch, ``F`` fields, ``D`` width, ``H_k`` CIN maps, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import XDeepFMConfig
from crossadapt.models.layers.cin import CompressedInteractionNet
from crossadapt.models.layers.linear import FirstOrderTerm
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.spec import FeatureSpec


class XDeepFM(CTRModel):
    """``logit = first_order + w^T [CIN(E), DNN(flatten(E))] + b`` (the DNN only when ``hidden_units``).

    Representation: ``[B, sum_k H_k (+ H)]``, the sum-pooled CIN maps (and the DNN's last layer).
    """

    architecture = "xdeepfm"

    def __init__(self, config: XDeepFMConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        self.first_order = FirstOrderTerm(spec, init_std=config.embedding_init_std, sparse=sparse)
        self.cin = CompressedInteractionNet(spec.num_fields, config.cin_layer_units)
        head_dim = self.cin.output_dim
        self.dnn = None
        if config.hidden_units:
            self.dnn = MLPBlock.from_config(spec.num_fields * config.embedding_dim, config)
            head_dim += self.dnn.output_dim
        self.output = nn.Linear(head_dim, 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        representation = self.cin(fields)
        if self.dnn is not None:
            representation = torch.cat([representation, self.dnn(fields.flatten(1))], dim=1)
        logits = self.output(representation).squeeze(-1) + self.first_order(categorical, numerical)
        return logits, representation
