"""AutoInt (Song et al., CIKM 2019): stacked multi-head self-attention over fields; AutoInt+ adds a DNN.

Symbols: ``B`` batch, ``F`` fields, ``D`` width, ``h`` heads, ``d`` per-head width, ``H`` last hidden width.
"""

from __future__ import annotations

import torch
from torch import nn

from crossadapt.models.base import CTRModel
from crossadapt.models.config import AutoIntConfig
from crossadapt.models.layers.attention import FieldSelfAttention
from crossadapt.models.layers.mlp import MLPBlock
from crossadapt.models.spec import FeatureSpec


class AutoInt(CTRModel):
    """``logit = w^T [flatten(Attn^L(E)), DNN(flatten(E))] + b`` (the DNN only when ``hidden_units``).

    Representation: ``[B, F * h * d (+ H)]``, the flattened attention output (and the DNN's last layer).
    """

    architecture = "autoint"

    def __init__(self, config: AutoIntConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__(config, spec, sparse=sparse)
        layers = []
        width = config.embedding_dim
        for _ in range(config.attention_layers):
            layer = FieldSelfAttention(
                width,
                config.attention_heads,
                config.attention_dim,
                use_residual=config.use_residual,
                layer_norm=config.layer_norm,
            )
            layers.append(layer)
            width = layer.output_dim
        self.attention = nn.Sequential(*layers)
        head_dim = spec.num_fields * width
        self.dnn = None
        if config.hidden_units:
            self.dnn = MLPBlock.from_config(spec.num_fields * config.embedding_dim, config)
            head_dim += self.dnn.output_dim
        self.output = nn.Linear(head_dim, 1)
        self.reset_interaction_parameters()

    def interact(self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor):
        representation = self.attention(fields).flatten(1)
        if self.dnn is not None:
            representation = torch.cat([representation, self.dnn(fields.flatten(1))], dim=1)
        return self.output(representation).squeeze(-1), representation
