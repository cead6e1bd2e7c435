"""The unit every training and evaluation loop consumes.

Symbols: ``B`` batch size, ``C`` categorical fields, ``N`` numerical fields.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True, slots=True)
class Batch:
    """A contiguous block of rows.

    Attributes:
        categorical: ``[B, C]`` int64, per-field vocabulary ids (0 is ``<UNK>``; no field offsets).
        numerical: ``[B, N]`` float32, already transformed (log2 for x > 2).
        label: ``[B]`` float32 click label in {0, 1} (or a soft label in [0, 1]).
        conversion: ``[B]`` float32 conversion label, if the dataset has one.
        timestamp: ``[B]`` int64 event time, if known.
        user: ``[B]`` int64 user id, if the dataset has one (for GAUC and cohorts).
        prob: ``[B]`` float32 ground-truth click probability (synthetic data only).
        teacher_logit: ``[B]`` float32 cached logit of a frozen teacher (distillation samples only).
    """

    categorical: torch.Tensor
    numerical: torch.Tensor
    label: torch.Tensor
    conversion: torch.Tensor | None = None
    timestamp: torch.Tensor | None = None
    user: torch.Tensor | None = None
    prob: torch.Tensor | None = None
    teacher_logit: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def to(self, device: torch.device | str) -> "Batch":
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).to(device, non_blocking=True)
                for f in fields(self)
                if getattr(self, f.name) is not None
            },
        )

    @staticmethod
    def concat(batches: "list[Batch]") -> "Batch":
        """Row-wise concatenation; optional columns survive only if every part has them."""
        out = {}
        for f in fields(Batch):
            parts = [getattr(b, f.name) for b in batches]
            out[f.name] = None if any(p is None for p in parts) else torch.cat(parts, 0)
        return Batch(**out)
