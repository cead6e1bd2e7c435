"""A minimal object store: the one interface the checkpoint and dataset stores are written against.

Keys are `/`-separated relative paths (`ctr/teacher/v000001/manifest.json`). Two backends:
`LocalObjectStore` (a folder; the embedded default) and `S3ObjectStore` (MinIO/S3, in `s3.py`).
Every write is atomic for readers: a reader sees the old object, the whole new one, or nothing.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

from services.common.errors import InvalidArgumentError, NotFoundError

_KEY_PART = re.compile(r"^[A-Za-z0-9_.=\-]+$")


class ObjectNotFoundError(NotFoundError):
    """No object under that key."""


def check_key(key: str) -> str:
    """Reject keys that could escape the store root or collide with temp files."""
    parts = key.split("/")
    if not key or any(not _KEY_PART.match(p) or p in (".", "..") for p in parts):
        raise InvalidArgumentError(f"invalid object key {key!r}", field="key")
    return key


class ObjectStore(ABC):
    """Bytes under keys. `list_children` gives the next path level, like `ls`."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes: ...

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None: ...

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """`length` bytes from `offset` (a Parquet footer without the file); stores override it to read only those."""
        return self.get_bytes(key)[offset:offset + length]

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def list_children(self, prefix: str) -> list[str]:
        """Sorted names one level below `prefix` (a folder key without trailing slash; '' = root)."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Sorted keys of every object below `prefix`, recursively."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing object is not an error."""

    @abstractmethod
    def uri(self, key: str = "") -> str: ...

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)


class LocalObjectStore(ObjectStore):
    """Objects as files under `root`; writes go to a temp file in the same folder, then rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _atomic_write(self, key: str, write) -> None:  # noqa: ANN001 - write(file_object)
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def put_bytes(self, key: str, data: bytes) -> None:
        self._atomic_write(key, lambda out: out.write(data))

    def put_file(self, key: str, path: Path) -> None:
        with open(path, "rb") as src:
            self._atomic_write(key, lambda out: shutil.copyfileobj(src, out, 16 * 1024 * 1024))

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {self.uri(key)}", field=key) from None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self._path(key), "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFoundError(f"no object {self.uri(key)}", field=key) from None

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise ObjectNotFoundError(f"no object {self.uri(key)}", field=key)
        shutil.copyfile(source, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError:
            raise ObjectNotFoundError(f"no object {self.uri(key)}", field=key) from None

    def list_children(self, prefix: str) -> list[str]:
        folder = self._path(prefix) if prefix else self.root
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if not p.name.startswith(".tmp-"))

    def list_keys(self, prefix: str) -> list[str]:
        folder = self._path(prefix) if prefix else self.root
        if not folder.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in folder.rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")
        )
        return sorted(keys)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def uri(self, key: str = "") -> str:
        return (self.root.resolve() / key).as_uri() if key else self.root.resolve().as_uri()
