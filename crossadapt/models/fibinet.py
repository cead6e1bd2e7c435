"""FiBiNET (Huang et al., RecSys 2019): SENET field importance + bilinear interactions + DNN.

Symbols: ``B`` batch, ``F`` fields, ``P = F (F-1) / 2`` pairs, ``D`` width, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import FiBiNETConfig
from crossadapt.models.layers.bilinear import BilinearInteraction
from crossadapt.models.layers.linear import FirstOrderTerm
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.layers.senet import SqueezeExcitation
from crossadapt.models.spec import FeatureSpec


class FiBiNET(CTRModel):
    """``logit = first_order + w^T DNN([Bilinear(E), Bilinear'(SENET(E))]) + b``.

    As in the paper: SENET re-weights the fields (``V = SENET(E)``); the bilinear layer (own weights for
    ``E`` and ``V``, sharing per ``bilinear_type``) forms ``p = {(e_i W) ⊙ e_j}`` and ``q = {(v_i W') ⊙ v_j}``
    for all ``P`` pairs; the combination ``[p, q]`` (``2 P D`` wide) feeds the DNN; the output adds the
    paper's linear part ``w_0 + sum_i w_i x_i``. Paper config: width 16, hidden ``[256, 128, 16]``.

    Representation: the DNN's last hidden layer ``[B, H]`` (``[B, 2 P D]`` without hidden layers).
    Needs at least 2 fields.
    """

    architecture = "fibinet"

    def __init__(self, config: FiBiNETConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        if spec.num_fields < 2:
            raise ValueError(f"FiBiNET needs at least 2 fields to form pairs, the spec has {spec.num_fields}")
        self.first_order = FirstOrderTerm(spec, init_std=config.embedding_init_std, sparse=sparse)
        self.senet = SqueezeExcitation(spec.num_fields, config.reduction_ratio)
        self.bilinear = BilinearInteraction(spec.num_fields, config.embedding_dim, config.bilinear_type, num_inputs=2)
        self.dnn = MLPBlock.from_config(self.bilinear.output_dim, config)
        self.output = nn.Linear(self.dnn.output_dim, 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        stacked = torch.stack([fields, self.senet(fields)], dim=1)  # [B, 2, F, D]
        hidden = self.dnn(self.bilinear(stacked))  # bilinear: [B, 2 P D], a transposed view (no copy)
        logits = self.output(hidden).squeeze(-1) + self.first_order(categorical, numerical)
        return logits, hidden
