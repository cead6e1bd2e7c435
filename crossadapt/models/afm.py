"""AFM (Xiao et al., IJCAI 2017): attention-weighted pooling of all pairwise embedding products.

Symbols: ``B`` batch, ``F`` fields, ``P = F (F-1) / 2`` pairs, ``D`` width, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import AFMConfig
from crossadapt.models.layers.attention import AttentionalPooling
from crossadapt.models.layers.linear import FirstOrderTerm
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.layers.pairs import PairProduct, pair_row_indices
from crossadapt.models.spec import FeatureSpec


class AFM(CTRModel):
    """``logit = first_order + p^T DNN(dropout(sum_p a_p (e_i ⊙ e_j))) + b``; the DNN is empty in the paper.

    With a single field there are no pairs and the pooled vector is zero.
    Representation: the pooled vector ``[B, D]`` (the DNN's last layer ``[B, H]`` when ``hidden_units``).
    """

    architecture = "afm"
    left_rows: torch.Tensor
    right_rows: torch.Tensor

    def __init__(self, config: AFMConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        self.first_order = FirstOrderTerm(spec, init_std=config.embedding_init_std, sparse=sparse)
        # Element-major rows (d, pair): the products come out as [D, P, B] for one attention GEMM.
        left_rows, right_rows = pair_row_indices(spec.num_fields, config.embedding_dim, element_major=True)
        self.register_buffer("left_rows", left_rows, persistent=False)
        self.register_buffer("right_rows", right_rows, persistent=False)
        self.pooling = AttentionalPooling(config.embedding_dim, config.attention_dim)
        self.dropout = nn.Dropout(config.dropout)
        self.dnn = MLPBlock.from_config(config.embedding_dim, config)
        self.output = nn.Linear(self.dnn.output_dim, 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        batch, num_fields, width = fields.shape
        if self.left_rows.numel():
            field_major = fields.permute(1, 2, 0).reshape(num_fields * width, batch)  # [F * D, B]
            products = PairProduct.apply(field_major, field_major, self.left_rows, self.right_rows, 1)  # [D*P, B]
            pooled = self.pooling(products.view(width, -1, batch))
        else:
            pooled = fields.new_zeros(batch, width)
        hidden = self.dnn(self.dropout(pooled))
        logits = self.output(hidden).squeeze(-1) + self.first_order(categorical, numerical)
        return logits, hidden
