"""Factorisation-machine second-order term.

Symbols: ``B`` batch, ``F`` fields, ``D`` width.
"""

from __future__ import annotations

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    """``sum_{i<j} <e_i, e_j>`` in O(F D) via ``0.5 * ((sum_i e_i)^2 - sum_i e_i^2)`` summed over ``D``.

    Shapes: ``[B, F, D] -> [B]``.
    """

    def forward(self, fields: torch.Tensor) -> torch.Tensor:
        square_of_sum = fields.sum(dim=1).square()
        sum_of_squares = fields.square().sum(dim=1)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1)
