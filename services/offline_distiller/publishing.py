"""Trained models into the checkpoint store, with their training state beside them.

A model checkpoint here has `model_io.publish_model`'s layout (so `load_model`, `load_vocabulary`
and the projector's `read_table` read it) plus files the next trainer continues from:

    training/optimizer.pt       # the student's optimiser state (TrainOptimizer.state_dict, torch.save)
    training/<run>.pt           # a resumable run's state (ProgressiveDistillation / CoDistiller state_dict)

`publish_checkpoint` uploads into a version claimed beforehand and writes the manifest last, so a
task that claimed its output version when the operation started publishes it exactly once, and
no reader ever sees a half-written version. The co-distiller uses the same helpers.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from crossadapt.checkpoint import MANIFEST_NAME, CheckpointManifest, save_checkpoint
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models.spec import FeatureSpec
from services.common.errors import DataLossError, FailedPreconditionError
from services.common.model_io import VOCAB_DIR, write_tables
from services.common.storage.checkpoints import CheckpointNotFoundError, CheckpointStore, PublishedCheckpoint

OPTIMIZER_FILE = "training/optimizer.pt"


def tensor_bytes(value: Any) -> bytes:
    """`torch.save` of plain values and tensors (read back with `load_tensor_bytes`)."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def load_tensor_bytes(data: bytes, where: str) -> Any:
    """The inverse of `tensor_bytes`; only plain values and tensors are accepted (no pickled code)."""
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises several types for bad bytes
        raise DataLossError(f"{where}: unreadable training state ({type(exc).__name__}: {exc})", field=where) from exc


def published_by(checkpoints: CheckpointStore, name: str, version: str, operation_id: str) -> PublishedCheckpoint | None:
    """The version if it is published by `operation_id` (a retry after the manifest was written); else None."""
    try:
        existing = checkpoints.resolve(name, version)
    except CheckpointNotFoundError:
        return None
    if existing.manifest.extra.get("operation_id") != operation_id:
        raise FailedPreconditionError(f"{existing.ref} was published by another operation", field=name)
    return existing


def publish_checkpoint(  # noqa: PLR0913 - manifest fields
    checkpoints: CheckpointStore,
    name: str,
    version: str,
    model: Any,
    *,
    feature_spec: FeatureSpec,
    vocab_hash: str,
    operation_id: str,
    vocabulary: Vocabulary | None = None,
    parent: str | None = None,
    metrics: Mapping[str, float | int | None] | None = None,
    extra: Mapping[str, Any] | None = None,
    files: Mapping[str, bytes] | None = None,
    tables: bool = True,
    table_shards: int | None = None,
) -> PublishedCheckpoint:
    """Publish `model` (+ its tables, vocabulary and `files`) into the claimed `name/version`; idempotent."""
    done = published_by(checkpoints, name, version, operation_id)
    if done is not None:
        return done
    with tempfile.TemporaryDirectory(prefix="crossadapt-distilled-") as tmp:
        folder = Path(tmp) / "ckpt"
        core = save_checkpoint(folder, model, feature_spec=feature_spec, vocab_hash=vocab_hash, metrics=metrics,
                               parent=parent, extra=extra)
        (folder / MANIFEST_NAME).unlink()  # the store's manifest comes last, below
        layouts = write_tables(folder, model, table_shards) if tables else {}
        if vocabulary is not None:
            vocabulary.save(folder / VOCAB_DIR)
        for relpath, data in (files or {}).items():
            (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
            (folder / relpath).write_bytes(data)
        entries = {}
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            entries[path.relative_to(folder).as_posix()] = checkpoints.write_file(name, version, path.relative_to(
                folder).as_posix(), path.read_bytes())
        manifest = CheckpointManifest(
            architecture=core.architecture, config=core.config, feature_spec=feature_spec, vocab_hash=vocab_hash,
            metrics=core.metrics, files=entries, parent=parent,
            created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            extra={**core.extra, "operation_id": operation_id, "has_vocabulary": vocabulary is not None,
                   **({"tables": layouts} if tables else {})},
        )
        return checkpoints.publish_manifest(name, version, manifest)


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


def read_state(checkpoints: CheckpointStore, published: PublishedCheckpoint, relpath: str) -> Any:
    """A training-state file of a published checkpoint (verified against its manifest)."""
    return load_tensor_bytes(checkpoints.read_file(published, relpath), f"{published.ref}/{relpath}")
