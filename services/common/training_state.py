"""A trainer's state beside its model in a checkpoint, and work-in-progress checkpoints.

A checkpoint a long training task publishes (`model_io.publish_model` with `files=`) carries, besides
the model, the files the next trainer continues from:

    training/optimizer.pt       # the model's optimiser state (torch.save of plain values and tensors)
    training/<run>.pt           # a resumable run's state (e.g. ProgressiveDistillation / CoDistiller state_dict)

Work-in-progress checkpoints (a task's own, deleted when it ends) are removed whole with
`delete_checkpoint` / `delete_version`: manifest first, so readers stop seeing a version before its
files go.
"""

from __future__ import annotations

import io
from typing import Any

from crossadapt.checkpoint import MANIFEST_NAME
from services.common.errors import DataLossError
from services.common.storage.checkpoints import CheckpointStore, PublishedCheckpoint

OPTIMIZER_FILE = "training/optimizer.pt"


def tensor_bytes(value: Any) -> bytes:
    """`torch.save` of plain values and tensors (read back with `load_tensor_bytes`)."""
    import torch  # here, not at the top: a gRPC server imports this module to delete checkpoints, never to train

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def load_tensor_bytes(data: bytes, where: str) -> Any:
    """The inverse of `tensor_bytes`; only plain values and tensors are accepted (no pickled code)."""
    import torch

    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad bytes
        raise DataLossError(f"{where}: unreadable training state ({type(exc).__name__}: {exc})", field=where) from exc


def read_state(checkpoints: CheckpointStore, published: PublishedCheckpoint, relpath: str) -> Any:
    """A training-state file of a published checkpoint (verified against its manifest)."""
    return load_tensor_bytes(checkpoints.read_file(published, relpath), f"{published.ref}/{relpath}")


def delete_version(checkpoints: CheckpointStore, name: str, version: str) -> None:
    """Remove a version entirely: its manifest first (readers stop seeing it), then its files."""
    base = f"{checkpoints.prefix}/{name}/{version}"
    checkpoints.objects.delete(f"{base}/{MANIFEST_NAME}")
    checkpoints.objects.delete_prefix(base)


def delete_checkpoint(checkpoints: CheckpointStore, name: str) -> None:
    """Remove every version of `name` (work-in-progress checkpoints of a finished operation)."""
    for version in checkpoints.versions(name):
        delete_version(checkpoints, name, version)
    checkpoints.objects.delete_prefix(f"{checkpoints.prefix}/{name}")


def default_device() -> str:
    """Where a task trains: the GPU when the worker has one."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"
