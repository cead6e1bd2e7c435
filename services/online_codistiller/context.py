"""The stores a co-distillation works on: shared by the online co-distiller's server and its tasks without
the engine (the training itself, `pipeline` and torch, loads only in a worker)."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.operations import OperationStore
from services.common.storage.checkpoints import CheckpointStore
from services.common.storage.datasets import DatasetStore


@dataclass(frozen=True)
class CoDistillerContext:
    checkpoints: CheckpointStore
    datasets: DatasetStore
    operations: OperationStore
