"""``SplitArrays``: the numpy columns of one split (memory-mapped when opened from disk).

Symbols: ``n`` rows, ``C`` categorical fields, ``N`` numerical fields.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # tensors only in to_batch: a process that reads and writes splits (a gRPC server) needs no torch
    import torch

    from crossadapt.data.batch import Batch

#: Optional per-row columns, in Batch order; a split stores the ones it has as ``<name>.npy``.
OPTIONAL_COLUMNS = ("conversion", "timestamp", "user", "prob", "teacher_logit")
COLUMN_DTYPES = {
    "label": np.float32,
    "conversion": np.float32,
    "timestamp": np.int64,
    "user": np.int64,
    "prob": np.float32,
    "teacher_logit": np.float32,
}


@dataclass(frozen=True)
class SplitArrays:
    """Rows of one split.

    Attributes:
        categorical: ``[n, C]`` int32 (or int64) per-field ids, 0 = ``<UNK>``.
        numerical: ``[n, N]`` float32, already transformed.
        label: ``[n]`` float32 click label.
        conversion, timestamp, user, prob, teacher_logit: ``[n]`` optional columns (see ``Batch``).
    """

    categorical: np.ndarray
    numerical: np.ndarray
    label: np.ndarray
    conversion: np.ndarray | None = None
    timestamp: np.ndarray | None = None
    user: np.ndarray | None = None
    prob: np.ndarray | None = None
    teacher_logit: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.label)
        if self.categorical.ndim != 2 or self.numerical.ndim != 2:
            raise ValueError("categorical and numerical must be 2-D [n, C] and [n, N]")
        for f in fields(self):
            column = getattr(self, f.name)
            if column is not None and column.shape[0] != n:
                raise ValueError(f"column {f.name} has {column.shape[0]} rows, label has {n}")

    def __len__(self) -> int:
        return int(self.label.shape[0])

    @property
    def num_categorical(self) -> int:
        return int(self.categorical.shape[1])

    @property
    def num_numerical(self) -> int:
        return int(self.numerical.shape[1])

    def _map(self, fn) -> "SplitArrays":
        return SplitArrays(**{f.name: None if getattr(self, f.name) is None else fn(getattr(self, f.name)) for f in fields(self)})

    def take(self, indices: np.ndarray) -> "SplitArrays":
        """Rows at ``indices`` (any order, repeats allowed), gathered into memory."""
        indices = np.asarray(indices)
        return self._map(lambda column: column[indices])

    def slice(self, start: int, stop: int) -> "SplitArrays":
        """Rows ``[start, stop)`` as views (no copy; still memory-mapped if the source is)."""
        return self._map(lambda column: column[start:stop])

    def with_teacher_logit(self, logits: np.ndarray) -> "SplitArrays":
        """A copy that carries cached teacher logits ``[n]`` (for distillation samples)."""
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        if logits.shape[0] != len(self):
            raise ValueError(f"{logits.shape[0]} teacher logits for {len(self)} rows")
        return replace(self, teacher_logit=logits)

    @staticmethod
    def concat(parts: "list[SplitArrays]") -> "SplitArrays":
        """Row-wise concatenation; an optional column survives only if every part has it."""
        if not parts:
            raise ValueError("nothing to concatenate")
        out = {}
        for f in fields(SplitArrays):
            columns = [getattr(p, f.name) for p in parts]
            out[f.name] = None if any(c is None for c in columns) else np.concatenate(columns, axis=0)
        return SplitArrays(**out)

    def to_batch(self) -> Batch:
        """All rows as one ``Batch`` (categorical widened to int64; float columns shared when possible)."""
        import torch

        from crossadapt.data.batch import Batch

        def tensor(column: np.ndarray | None, dtype: torch.dtype) -> torch.Tensor | None:
            if column is None:
                return None
            return torch.from_numpy(np.ascontiguousarray(column)).to(dtype)

        return Batch(
            categorical=tensor(self.categorical, torch.int64),
            numerical=tensor(self.numerical, torch.float32),
            label=tensor(self.label, torch.float32),
            conversion=tensor(self.conversion, torch.float32),
            timestamp=tensor(self.timestamp, torch.int64),
            user=tensor(self.user, torch.int64),
            prob=tensor(self.prob, torch.float32),
            teacher_logit=tensor(self.teacher_logit, torch.float32),
        )
