"""Cross networks of DCN (Wang et al. 2017) and DCN-V2 (Wang et al. 2021).

Symbols: ``B`` batch, ``K = F * D`` width of the flattened embeddings ``x0``, ``r`` low rank.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossNet(nn.Module):
    """DCN vector cross layers: ``x_{l+1} = x0 * (x_l · w_l) + b_l + x_l``.

    Shapes: ``[B, K] -> [B, K]``. Cost per layer and row: ``2K`` multiply-adds.
    """

    def __init__(self, input_dim: int, num_layers: int):
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(input_dim, 1, bias=False) for _ in range(num_layers))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(input_dim)) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for projection, bias in zip(self.projections, self.biases):
            x = torch.addcmul(x + bias, x0, projection(x))
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 matrix cross layers: ``x_{l+1} = x0 * (W_l x_l + b_l) + x_l``.

    With ``low_rank=r`` each ``W_l = U_l V_l^T`` (``V_l^T: K -> r``, ``U_l: r -> K``), the paper's
    cheaper variant; otherwise ``W_l`` is a full ``K x K`` matrix.

    Shapes: ``[B, K] -> [B, K]``.
    """

    def __init__(self, input_dim: int, num_layers: int, *, low_rank: int | None = None):
        super().__init__()

        def make_map() -> nn.Module:
            if low_rank is None:
                return nn.Linear(input_dim, input_dim)
            return nn.Sequential(nn.Linear(input_dim, low_rank, bias=False), nn.Linear(low_rank, input_dim))

        self.maps = nn.ModuleList(make_map() for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for linear_map in self.maps:
            x = torch.addcmul(x, x0, linear_map(x))
        return x
