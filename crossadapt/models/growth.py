"""Grow a whole model's tables to a newer vocabulary version (ids appended per field, old ids unchanged).

A CTRModel may hold several fused embeddings (the ``[*, D]`` field embedding and width-1 first-order
tables); every one of them grows, the model's ``spec`` follows, and the per-row state of every optimiser
holding a grown table gets zero rows for the new ids (:func:`grow_optimizer_state`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from crossadapt.models.layers.embedding import grow_optimizer_state


def table_sizes(model: nn.Module) -> list[int]:
    """Rows per categorical field (``<UNK>`` included), in column order."""
    return [field.vocab_size for field in model.embedding.spec.categorical]


def grow_model(model: nn.Module, sizes: Sequence[int], optimizers: Iterable[torch.optim.Optimizer] = (), *,
               init: dict[str, tuple[torch.Tensor, torch.Tensor]] | None = None) -> dict[str, int]:
    """Grow ``model``'s tables so field ``k`` has ``max(current, sizes[k])`` rows; returns rows added per field.

    ``init[field] = (rows [new, D], use [new] bool)``: new rows of the field embedding (``model.embedding``)
    where ``use`` is True start from ``rows`` (e.g. the teacher's projected rows); every other new row, and
    every new row of a first-order table, starts from the initialiser. ``optimizers``: plain torch optimisers
    whose per-row state follows (a :class:`~crossadapt.training.optim.TrainOptimizer`'s ``optimizers``).
    """
    current = table_sizes(model)
    if len(sizes) != len(current):
        raise ValueError(f"sizes has {len(sizes)} fields, the model has {len(current)}")
    optimizers = list(optimizers)
    init = init or {}
    added: dict[str, int] = {}
    for field, old, new in zip(model.embedding.spec.categorical, current, sizes):
        rows = int(new) - old
        if rows <= 0:
            continue
        for module in model.embedding_modules():
            values, use = init.get(field.name, (None, None)) if module is model.embedding else (None, None)
            growth = module.grow(field.name, rows, values, use_init=use)
            for optimizer in optimizers:
                grow_optimizer_state(optimizer, module.table.weight, growth)
        added[field.name] = rows
    if added:
        model.spec = model.embedding.spec
    return added
