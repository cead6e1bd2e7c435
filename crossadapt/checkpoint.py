"""Model checkpoints: a folder with ``manifest.json`` plus tensors in safetensors, published atomically.

Layout::

    ckpt/
      model.safetensors   # the model's state_dict
      manifest.json       # CheckpointManifest: architecture, model config, feature spec,
                          # vocabulary hash, metrics, sha256 + size of every file, parent, extra

Writing goes to a hidden temporary sibling (``.ckpt.tmp-<random>``): tensors first, the manifest
last, each file fsync'ed, then one ``rename`` publishes the folder. A reader therefore sees either
no folder or a complete one; a crash leaves only the hidden temporary folder behind.

:func:`build_manifest` and :func:`verify_files` are pure (they only read files) so that a platform
store (local disk, S3) can reuse them around its own upload.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crossadapt.models.spec import FeatureSpec

if TYPE_CHECKING:  # torch loads where tensors are written or read: a reader of manifests (a gRPC server) needs none
    import torch

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
TENSORS_NAME = "model.safetensors"
_HASH_CHUNK = 8 << 20  # 8 MiB: large tables are hashed streaming, never read whole


class CheckpointError(Exception):
    """Base class of every checkpoint problem (the message names the folder/file)."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """The checkpoint folder or its manifest does not exist."""


class CheckpointExistsError(CheckpointError, FileExistsError):
    """The target folder exists already and ``overwrite`` was not requested."""


class ManifestError(CheckpointError):
    """``manifest.json`` is unreadable, malformed or of an unknown format version."""


class ChecksumMismatchError(CheckpointError):
    """A file listed in the manifest is missing, has another size or another sha256."""


class VocabHashMismatchError(CheckpointError):
    """The checkpoint was trained on another vocabulary than the caller's dataset."""


class FileEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    size: int = Field(ge=0)


class CheckpointManifest(BaseModel):
    """Everything needed to rebuild and trust a model (``config`` is the model's ModelConfig dump)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    format_version: int = FORMAT_VERSION
    architecture: str
    config: dict[str, Any]
    feature_spec: FeatureSpec
    vocab_hash: str
    metrics: dict[str, float | int | None] = Field(default_factory=dict)
    files: dict[str, FileEntry]
    parent: str | None = None
    created_at: str
    extra: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True)
class LoadedCheckpoint:
    model: torch.nn.Module
    manifest: CheckpointManifest
    path: Path


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(
    files: Mapping[str, str | Path],
    *,
    architecture: str,
    config: Mapping[str, Any],
    feature_spec: FeatureSpec,
    vocab_hash: str,
    metrics: Mapping[str, float | int | None] | None = None,
    parent: str | None = None,
    extra: Mapping[str, Any] | None = None,
    created_at: str | None = None,
) -> CheckpointManifest:
    """A manifest listing sha256 and size of ``files`` ({name in the folder: path to read})."""
    entries = {
        name: FileEntry(sha256=sha256_file(path), size=os.path.getsize(path)) for name, path in files.items()
    }
    return CheckpointManifest(
        architecture=architecture,
        config=dict(config),
        feature_spec=feature_spec,
        vocab_hash=vocab_hash,
        metrics=dict(metrics or {}),
        files=entries,
        parent=parent,
        created_at=created_at or datetime.now(timezone.utc).isoformat(timespec="seconds"),
        extra=dict(extra or {}),
    )


def verify_files(folder: str | Path, manifest: CheckpointManifest) -> None:
    """Raise :class:`ChecksumMismatchError` unless every listed file exists with its size and sha256."""
    folder = Path(folder)
    for name, entry in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ChecksumMismatchError(f"{path}: listed in the manifest but missing")
        size = path.stat().st_size
        if size != entry.size:
            raise ChecksumMismatchError(f"{path}: size {size} bytes, manifest says {entry.size}")
        digest = sha256_file(path)
        if digest != entry.sha256:
            raise ChecksumMismatchError(f"{path}: sha256 {digest[:12]}…, manifest says {entry.sha256[:12]}…")


def read_manifest(path: str | Path) -> CheckpointManifest:
    """Parse ``<path>/manifest.json`` (no checksum verification)."""
    folder = Path(path)
    if not folder.is_dir():
        raise CheckpointNotFoundError(f"{folder}: no such checkpoint folder")
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise CheckpointNotFoundError(f"{manifest_path}: missing (not a complete checkpoint)")
    try:
        raw = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{manifest_path}: unreadable JSON ({exc})") from exc
    if isinstance(raw, dict) and raw.get("format_version") != FORMAT_VERSION:
        raise ManifestError(
            f"{manifest_path}: format_version {raw.get('format_version')!r}, this reader knows {FORMAT_VERSION}"
        )
    try:
        return CheckpointManifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ManifestError(f"{manifest_path}: field {where!r}: {first['msg']}") from exc


def _fsync_path(path: Path) -> None:
    """Flush a file's or a folder's metadata to disk (folders need it for renames to be durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _state_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies-or-views of the state dict; shared storage is cloned (safetensors forbids it)."""
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict().items():
        t = tensor.detach()
        if t.is_sparse:
            t = t.to_dense()
        t = t.to("cpu").contiguous()
        key = t.untyped_storage().data_ptr()
        if key in seen and t.numel() > 0:
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        tensors[name] = t
    return tensors


def save_checkpoint(
    path: str | Path,
    model: torch.nn.Module,
    *,
    feature_spec: FeatureSpec,
    vocab_hash: str,
    metrics: Mapping[str, float | int | None] | None = None,
    parent: str | None = None,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> CheckpointManifest:
    """Write ``model`` (a CTRModel: needs ``.config`` and ``.spec``) as a checkpoint folder at ``path``.

    ``extra`` must be JSON-serialisable (e.g. the train config, a stream position). Raises
    :class:`CheckpointExistsError` if ``path`` exists and ``overwrite`` is false.
    """
    from safetensors.torch import save_file

    target = Path(path)
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "model_dump"):
        raise CheckpointError(f"{type(model).__name__} has no pydantic .config; cannot record how to rebuild it")
    model_spec = getattr(model, "spec", None)
    if model_spec is not None and model_spec != feature_spec:
        raise CheckpointError("feature_spec differs from the model's own .spec; refusing to write a wrong manifest")
    if target.exists() and not overwrite:
        raise CheckpointExistsError(f"{target}: exists already (pass overwrite=True to replace it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()
    try:
        tensor_path = tmp / TENSORS_NAME
        save_file(_state_tensors(model), str(tensor_path), metadata={"format": "pt"})
        _fsync_path(tensor_path)
        manifest = build_manifest(
            {TENSORS_NAME: tensor_path},
            architecture=str(config.architecture),
            config=config.model_dump(mode="json"),
            feature_spec=feature_spec,
            vocab_hash=vocab_hash,
            metrics=metrics,
            parent=parent,
            extra=extra,
        )
        manifest_path = tmp / MANIFEST_NAME
        with open(manifest_path, "w") as fh:
            fh.write(manifest.model_dump_json(indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_path(tmp)
        _publish(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _publish(tmp: Path, target: Path) -> None:
    """Rename the finished folder into place; an old checkpoint is moved aside first, then removed."""
    trash = None
    if target.exists():
        trash = target.parent / f".{target.name}.old-{uuid.uuid4().hex[:12]}"
        os.rename(target, trash)
    os.rename(tmp, target)
    _fsync_path(target.parent)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    *,
    expected_vocab_hash: str | None = None,
) -> LoadedCheckpoint:
    """Verify and load a checkpoint into a freshly built model (in eval mode).

    Raises :class:`CheckpointNotFoundError`, :class:`ManifestError`, :class:`VocabHashMismatchError`
    (when ``expected_vocab_hash`` is given and differs) or :class:`ChecksumMismatchError`.
    """
    from safetensors.torch import load_file

    from crossadapt.models import build_model, parse_model_config  # models import lazily: no cycle

    folder = Path(path)
    manifest = read_manifest(folder)
    if expected_vocab_hash is not None and manifest.vocab_hash != expected_vocab_hash:
        raise VocabHashMismatchError(
            f"{folder}: trained on vocabulary {manifest.vocab_hash[:12]}…, "
            f"but the data uses {expected_vocab_hash[:12]}… (ids would mean other feature values)"
        )
    verify_files(folder, manifest)
    if TENSORS_NAME not in manifest.files:
        raise ManifestError(f"{folder / MANIFEST_NAME}: does not list {TENSORS_NAME}")
    try:
        config = parse_model_config(manifest.config)
    except ValidationError as exc:
        raise ManifestError(f"{folder / MANIFEST_NAME}: invalid model config ({exc.errors()[0]['msg']})") from exc
    model = build_model(config, manifest.feature_spec)
    state = load_file(str(folder / TENSORS_NAME), device="cpu")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ManifestError(f"{folder}: tensors do not fit the {manifest.architecture} model: {exc}") from exc
    model.to(map_location)
    model.eval()
    return LoadedCheckpoint(model=model, manifest=manifest, path=folder)
