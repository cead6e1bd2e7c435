"""SENET field-importance layer (FiBiNET, Huang et al. 2019, Sec. 3.3).

Symbols: ``B`` batch, ``F`` fields, ``D`` width, ``R = max(1, floor(F / reduction_ratio))``.
"""

from __future__ import annotations

import torch
from torch import nn


class SqueezeExcitation(nn.Module):
    """Squeeze -> excitation -> re-weight.

    * squeeze: ``z_f = mean_d e_{f,d}`` (mean pooling over ``D``, which the paper found better than max);
    * excitation: ``a = ReLU(W2 ReLU(W1 z))`` with ``W1 [R, F]``, ``W2 [F, R]``, no biases (as in the paper);
    * re-weight: ``v_f = a_f * e_f``.

    Shapes: ``[B, F, D] -> [B, F, D]``.

    Example::

        senet = SqueezeExcitation(num_fields=39, reduction_ratio=3)   # R = 13
        reweighted = senet(torch.randn(4, 39, 16))
    """

    def __init__(self, num_fields: int, reduction_ratio: float = 3.0):
        super().__init__()
        if reduction_ratio < 1:
            raise ValueError(f"reduction_ratio must be >= 1, got {reduction_ratio}")
        reduced = max(1, int(num_fields / reduction_ratio))
        self.excitation = nn.Sequential(
            nn.Linear(num_fields, reduced, bias=False),
            nn.ReLU(),
            nn.Linear(reduced, num_fields, bias=False),
            nn.ReLU(),
        )

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        weights = self.excitation(fields.mean(dim=-1))  # [B, F]
        return fields * weights.unsqueeze(-1)
