"""The deep tower shared by most models.

Symbols: ``B`` batch, ``K`` input width, ``H`` width of the last hidden layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from torch import nn


class _TowerConfig(Protocol):
    hidden_units: list[int]
    dropout: float
    batch_norm: bool


class MLPBlock(nn.Module):
    """Stacked ``Linear -> [BatchNorm1d] -> ReLU -> [Dropout]`` layers.

    With no hidden layers the block is the identity, so a model can always route its features through
    it and read :attr:`output_dim`.

    Args:
        input_dim: ``K``.
        hidden_units: widths of the hidden layers, e.g. ``[256, 128, 16]``.
        dropout: dropout probability after each hidden layer (0 disables).
        batch_norm: insert BatchNorm1d after each Linear.

    Shapes: ``[B, K] -> [B, H]`` (``H = hidden_units[-1]``, or ``K`` when empty). The input may be a
    transposed (column-major) view; ``nn.Linear`` then runs a transposed GEMM with no copy.
    """

    def __init__(self, input_dim: int, hidden_units: Sequence[int], *, dropout: float = 0.0, batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for units in hidden_units:
            layers.append(nn.Linear(width, units))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        self.layers = nn.Sequential(*layers)
        self.input_dim = input_dim
        self.output_dim = width

    @classmethod
    def from_config(cls, input_dim: int, config: "_TowerConfig") -> "MLPBlock":
        """The deep tower a model config describes (``hidden_units``, ``dropout``, ``batch_norm``)."""
        return cls(input_dim, config.hidden_units, dropout=config.dropout, batch_norm=config.batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
