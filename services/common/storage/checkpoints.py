"""Versioned checkpoints on an object store, in the core manifest format (crossadapt.checkpoint).

Layout (keys below the store root)::

    checkpoints/<name>/v000001/manifest.json         # CheckpointManifest: sha256 + size of every file
    checkpoints/<name>/v000001/<files listed in it>  # e.g. model.safetensors, tables/<field>/shard-00000.safetensors
    checkpoints/<name>/v000001/.claims/<token>       # who allocated this version number

Publishing is atomic for readers: a writer first claims a version number, uploads the data files,
and writes `manifest.json` last (one PUT, or rename on disk). Readers only list versions that have
a manifest, so a crashed or still-running writer is invisible. Every read is checked against the
manifest's sha256 and size (DataLossError otherwise).

Claiming works on any object store (no conditional PUT needed): a writer adds its unique claim
object, lists the version's claims, and keeps the number only if its claim is the sole one it sees;
otherwise it withdraws and tries the next number. Two writers can both withdraw (then both retry),
but never both keep the same number.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pydantic import ValidationError

from crossadapt.checkpoint import MANIFEST_NAME, CheckpointManifest, FileEntry, build_manifest, verify_files
from services.common.errors import DataLossError, InvalidArgumentError, NotFoundError, UnavailableError
from services.common.storage.objects import ObjectNotFoundError, ObjectStore

CHECKPOINTS_PREFIX = "checkpoints"
CLAIMS_DIR = ".claims"
_VERSION = re.compile(r"^v(\d{6})$")
_NAME_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
_MAX_CLAIM_TRIES = 20
# A checkpoint's files go up (and are checked) side by side: one request at a time left a co-distiller's
# checkpoint (weights, 26 table shards, optimiser state) waiting on round trips; hashing and sockets
# release the GIL, so a few threads overlap them even while training holds the cores.
UPLOAD_THREADS = 4
T = TypeVar("T")
R = TypeVar("R")


def in_parallel(call: Callable[[T], R], items: Iterable[T], threads: int = UPLOAD_THREADS) -> list[R]:
    """`call` over `items` on up to `threads` threads, results in order; the first failure is raised
    (after the calls already started end)."""
    items = list(items)
    if len(items) <= 1:
        return [call(item) for item in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items)), thread_name_prefix="checkpoint-io") as pool:
        return list(pool.map(call, items))


def version_label(number: int) -> str:
    return f"v{number:06d}"


def check_name(name: str) -> str:
    """A checkpoint name: 1-8 slash-separated parts, none of them shaped like a version (`v000001`)."""
    parts = name.split("/")
    if not name or len(parts) > 8 or any(not _NAME_PART.match(p) or _VERSION.match(p) for p in parts):
        raise InvalidArgumentError(
            f"invalid checkpoint name {name!r} (letters, digits, '_.-', parts split by '/')", field="name"
        )
    return name


class CheckpointNotFoundError(NotFoundError):
    """No complete checkpoint with that name/version."""


@dataclass(frozen=True)
class PublishedCheckpoint:
    """A complete checkpoint: its name, version and (trusted) manifest."""

    name: str
    version: str
    manifest: CheckpointManifest

    @property
    def ref(self) -> str:
        """`<name>/<version>`: what a child's manifest records as its `parent`."""
        return f"{self.name}/{self.version}"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class CheckpointStore:
    """Claim, write, publish, resolve and verify checkpoints on an `ObjectStore`."""

    def __init__(self, objects: ObjectStore, prefix: str = CHECKPOINTS_PREFIX) -> None:
        self.objects = objects
        self.prefix = prefix

    def _key(self, name: str, version: str, relpath: str = "") -> str:
        base = f"{self.prefix}/{check_name(name)}/{version}"
        return f"{base}/{relpath}" if relpath else base

    # ---- reading -------------------------------------------------------------------------
    def _version_numbers(self, name: str) -> list[int]:
        children = self.objects.list_children(f"{self.prefix}/{check_name(name)}")
        return sorted(int(m.group(1)) for c in children if (m := _VERSION.match(c)))

    def versions(self, name: str) -> list[str]:
        """Complete versions (those with a manifest), oldest first."""
        numbers = self._version_numbers(name)
        return [version_label(n) for n in numbers if self.objects.exists(self._key(name, version_label(n), MANIFEST_NAME))]

    def resolve(self, name: str, version: str | None = None) -> PublishedCheckpoint:
        """The checkpoint `name` at `version`; None, '' or 'latest' means the newest complete one."""
        if version in (None, "", "latest"):
            for number in reversed(self._version_numbers(name)):
                label = version_label(number)
                try:
                    return PublishedCheckpoint(name, label, self.read_manifest(name, label))
                except CheckpointNotFoundError:
                    continue  # claimed or still being written: invisible to readers
            raise CheckpointNotFoundError(f"no published checkpoint named {name!r}", field="name")
        if not _VERSION.match(version):
            raise InvalidArgumentError(f"version must look like v000001 or be 'latest', got {version!r}", field="version")
        return PublishedCheckpoint(name, version, self.read_manifest(name, version))

    def read_manifest(self, name: str, version: str) -> CheckpointManifest:
        key = self._key(name, version, MANIFEST_NAME)
        try:
            raw = self.objects.get_bytes(key)
        except ObjectNotFoundError:
            raise CheckpointNotFoundError(f"no published checkpoint {name}/{version}", field="name") from None
        try:
            return CheckpointManifest.model_validate_json(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise DataLossError(f"{self.objects.uri(key)}: manifest field {where!r}: {first['msg']}", field=key) from exc

    def read_file(self, checkpoint: PublishedCheckpoint, relpath: str) -> bytes:
        """One file's bytes, verified against the manifest (size, then sha256)."""
        entry = self._listed(checkpoint, relpath)
        return self._read_verified(checkpoint, relpath, 0, entry.size, entry.sha256, whole=True)

    def read_range(self, checkpoint: PublishedCheckpoint, relpath: str, offset: int, length: int,
                   sha256: str) -> bytes:
        """`length` bytes of a listed file from `offset`, verified against `sha256` (the range's own digest, which
        the manifest records beside the range: a table stored inside model.safetensors)."""
        entry = self._listed(checkpoint, relpath)
        if offset < 0 or length < 0 or offset + length > entry.size:
            key = self._key(checkpoint.name, checkpoint.version, relpath)
            raise DataLossError(f"{self.objects.uri(key)}: bytes [{offset}, {offset + length}) lie beyond its "
                                f"{entry.size} bytes", field=relpath)
        return self._read_verified(checkpoint, relpath, offset, length, sha256, whole=False)

    @staticmethod
    def _listed(checkpoint: PublishedCheckpoint, relpath: str) -> FileEntry:
        entry = checkpoint.manifest.files.get(relpath)
        if entry is None:
            raise NotFoundError(f"{checkpoint.ref} has no file {relpath!r}", field=relpath)
        return entry

    def _read_verified(self, checkpoint: PublishedCheckpoint, relpath: str, offset: int, length: int, sha256: str,
                       *, whole: bool) -> bytes:
        """The file's bytes (`whole`) or `length` bytes from `offset`; DataLossError if missing, short or altered."""
        key = self._key(checkpoint.name, checkpoint.version, relpath)
        where = self.objects.uri(key) if whole else f"{self.objects.uri(key)} bytes [{offset}, {offset + length})"
        try:
            data = self.objects.get_bytes(key) if whole else self.objects.get_range(key, offset, length)
        except ObjectNotFoundError:
            raise DataLossError(f"{self.objects.uri(key)}: listed in the manifest but missing", field=relpath) from None
        if len(data) != length:
            raise DataLossError(f"{where}: {len(data)} bytes, manifest says {length}", field=relpath)
        digest = sha256_bytes(data)
        if digest != sha256:
            raise DataLossError(f"{where}: sha256 {digest[:12]}…, manifest says {sha256[:12]}…", field=relpath)
        return data

    def fetch(self, name: str, version: str | None, dest: Path) -> PublishedCheckpoint:
        """Download a checkpoint into folder `dest` and verify every file (core `verify_files`)."""
        checkpoint = self.resolve(name, version)
        dest.mkdir(parents=True, exist_ok=True)
        for relpath in checkpoint.manifest.files:
            target = dest / relpath
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                self.objects.get_file(self._key(name, checkpoint.version, relpath), target)
            except ObjectNotFoundError:
                raise DataLossError(f"{checkpoint.ref}/{relpath}: listed in the manifest but missing", field=relpath) from None
        (dest / MANIFEST_NAME).write_text(checkpoint.manifest.model_dump_json(indent=2))
        try:
            verify_files(dest, checkpoint.manifest)
        except Exception as exc:  # ChecksumMismatchError names the file
            raise DataLossError(str(exc), field=checkpoint.ref) from exc
        return checkpoint

    # ---- writing -------------------------------------------------------------------------
    def claim_version(self, name: str, owner: str) -> str:
        """Allocate the next version number of `name` for `owner` (see the module docstring)."""
        for _ in range(_MAX_CLAIM_TRIES):
            numbers = self._version_numbers(name)
            label = version_label((numbers[-1] if numbers else 0) + 1)
            token = f"{time.time_ns():020d}-{uuid.uuid4().hex}"
            claim_key = self._key(name, label, f"{CLAIMS_DIR}/{token}")
            self.objects.put_bytes(claim_key, json.dumps({"owner": owner}).encode())
            if self.objects.list_children(self._key(name, label, CLAIMS_DIR)) == [token]:
                return label
            self.objects.delete(claim_key)
            time.sleep(random.uniform(0.01, 0.1))
        raise UnavailableError(f"could not claim a version of {name!r} after {_MAX_CLAIM_TRIES} tries", field="name")

    def claim_owner(self, name: str, version: str) -> str | None:
        claims = self.objects.list_children(self._key(name, version, CLAIMS_DIR))
        if not claims:
            return None
        return json.loads(self.objects.get_bytes(self._key(name, version, f"{CLAIMS_DIR}/{claims[0]}")))["owner"]

    def write_file(self, name: str, version: str, relpath: str, data: bytes) -> FileEntry:
        """Upload one data file into a claimed, unpublished version; returns its manifest entry."""
        self.objects.put_bytes(self._key(name, version, relpath), data)
        return FileEntry(sha256=sha256_bytes(data), size=len(data))

    def write_files(self, name: str, version: str, files: Mapping[str, bytes | Path]) -> dict[str, FileEntry]:
        """Upload data files ({relpath: bytes or a local file}) into a claimed version, side by side."""
        def write(item: tuple[str, bytes | Path]) -> FileEntry:
            relpath, data = item
            return self.write_file(name, version, relpath, data.read_bytes() if isinstance(data, Path) else data)

        return dict(zip(files, in_parallel(write, files.items()), strict=True))

    def publish_manifest(self, name: str, version: str, manifest: CheckpointManifest) -> PublishedCheckpoint:
        """The last step: check every listed file is there with its size, then write the manifest."""
        def check(item: tuple[str, FileEntry]) -> None:
            relpath, entry = item
            key = self._key(name, version, relpath)
            try:
                size = self.objects.size(key)
            except ObjectNotFoundError:
                raise DataLossError(f"{self.objects.uri(key)}: not uploaded; refusing to publish", field=relpath) from None
            if size != entry.size:
                raise DataLossError(f"{self.objects.uri(key)}: {size} bytes, expected {entry.size}", field=relpath)

        in_parallel(check, manifest.files.items())
        self.objects.put_bytes(self._key(name, version, MANIFEST_NAME), manifest.model_dump_json(indent=2).encode())
        return PublishedCheckpoint(name, version, manifest)

    def publish_folder(self, name: str, folder: Path, *, owner: str = "upload", **manifest_fields) -> PublishedCheckpoint:  # noqa: ANN003
        """Publish a local folder's files (all of them, recursively) as the next version of `name`.

        `manifest_fields` go to the core `build_manifest` (architecture, config, feature_spec, vocab_hash, ...).
        """
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        files.pop(MANIFEST_NAME, None)
        manifest = build_manifest(files, **manifest_fields)
        version = self.claim_version(name, owner)
        in_parallel(lambda item: self.objects.put_file(self._key(name, version, item[0]), item[1]), files.items())
        return self.publish_manifest(name, version, manifest)

    def discard(self, name: str, version: str) -> int:
        """Delete an unpublished version's data files; its claim stays so the number is never reused."""
        if self.objects.exists(self._key(name, version, MANIFEST_NAME)):
            raise InvalidArgumentError(f"{name}/{version} is published; refusing to discard it", field="version")
        keys = [k for k in self.objects.list_keys(self._key(name, version)) if f"/{CLAIMS_DIR}/" not in k]
        for key in keys:
            self.objects.delete(key)
        return len(keys)
