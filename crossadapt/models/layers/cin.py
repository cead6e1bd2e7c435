"""xDeepFM's Compressed Interaction Network (Lian et al., KDD 2018, Sec. 3.1).

Symbols: ``B`` batch, ``F`` fields, ``D`` width, ``H_k`` feature maps of layer ``k`` (``H_0 = F``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class CompressedInteractionNet(nn.Module):
    """CIN: ``X^k_{h,*} = sum_{i,j} W^k_{h,i,j} (X^{k-1}_{i,*} ⊙ X^0_{j,*}) + b^k_h`` then sum pooling over ``D``.

    Each layer compresses the outer product of ``X^{k-1}`` and ``X^0`` along the fields (``D`` kept apart;
    ``Z^k [H_{k-1} F, D]``) with ``H_k`` filters, the paper's 1x1 convolution; no activation, as in the
    paper. Computed field-major (``[fields, B * D]``) and factorised as
    ``X^k_h = sum_i X^{k-1}_i ⊙ T^k_{h,i} + b_h`` with ``T^k_{h,i} = sum_j W^k_{h,i,j} X^0_j``: the same
    multiply-adds (ONE GEMM ``[H_k H_{k-1}, F] @ [F, B D]`` per layer) without materialising the
    ``H_{k-1} F``-row outer product (``T`` has ``H_k H_{k-1}`` rows, 2.4x fewer for Criteo's first layer).
    The filters are stored as ``nn.Linear(H_{k-1} F, H_k)``, the shape of the paper's convolution.

    Args:
        num_fields: ``F``.
        layer_units: ``[H_1, ..., H_L]``.

    Shapes: ``[B, F, D] -> [B, H_1 + ... + H_L]`` (each layer's maps summed over ``D``).
    """

    def __init__(self, num_fields: int, layer_units: Sequence[int]):
        super().__init__()
        if not layer_units:
            raise ValueError("CIN needs at least one layer")
        self.num_fields = num_fields
        widths = [num_fields, *layer_units]
        self.compressions = nn.ModuleList(
            nn.Linear(previous * num_fields, units) for previous, units in zip(widths[:-1], widths[1:])
        )
        self.output_dim = sum(layer_units)

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        batch, num_fields, width = fields.shape
        x0 = fields.permute(1, 0, 2).reshape(num_fields, batch * width)  # [F, B*D]
        x = x0
        pooled = []
        for compression in self.compressions:
            maps, previous = compression.out_features, x.shape[0]
            filters = compression.weight.view(maps * previous, num_fields)  # W^k[h, i, j] as [(h, i), j]
            mixed = torch.mm(filters, x0).view(maps, previous, -1)  # T^k [H_k, H_{k-1}, B*D]
            x = (mixed * x.unsqueeze(0)).sum(dim=1) + compression.bias.unsqueeze(1)  # [H_k, B*D]
            pooled.append(x.view(maps, batch, width).sum(dim=-1))  # [H_k, B]
        return torch.cat(pooled, dim=0).t()
