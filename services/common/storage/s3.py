"""S3/MinIO backend of the object store (the `minio` SDK), with bounded retries on transient errors.

Transient: connection errors, timeouts, HTTP 5xx and S3's `SlowDown`/`InternalError`/... codes.
Not retried: 4xx answers such as `NoSuchKey` or `AccessDenied` (retrying cannot change them).
Objects above `part_size` go up as multipart uploads (minio's `put_object(part_size=...)`).
"""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import urllib3
from minio import Minio
from minio.error import InvalidResponseError, S3Error, ServerError

from services.common.errors import UnavailableError
from services.common.storage.objects import ObjectNotFoundError, ObjectStore, check_key

log = logging.getLogger(__name__)
T = TypeVar("T")

TRANSIENT_S3_CODES = frozenset(
    {"InternalError", "SlowDown", "ServiceUnavailable", "RequestTimeout", "OperationAborted", "Throttling"}
)
NOT_FOUND_S3_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound"})


def is_transient(error: BaseException) -> bool:
    """True for errors a retry can cure (network, 5xx); False for definite answers (4xx)."""
    if isinstance(error, S3Error):
        status = getattr(error.response, "status", 0) or 0
        return error.code in TRANSIENT_S3_CODES or status >= 500
    if isinstance(error, ServerError):
        return error.status_code >= 500
    if isinstance(error, InvalidResponseError):  # e.g. a proxy's HTML 502 page
        return "Response code: 5" in str(error)
    return isinstance(error, (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError))


def with_retries(call: Callable[[], T], *, what: str, attempts: int, backoff_s: float) -> T:
    """Run `call`, retrying transient errors with exponential backoff and jitter (bounded).

    After `attempts` transient failures raises UnavailableError; a non-transient error is
    raised at once (NoSuchKey becomes ObjectNotFoundError).
    """
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except S3Error as error:
            if error.code in NOT_FOUND_S3_CODES:
                raise ObjectNotFoundError(f"no object ({what})", field=error.object_name) from None
            if not is_transient(error) or attempt == attempts:
                if is_transient(error):
                    raise UnavailableError(f"S3 kept failing ({what}): {error.code}") from error
                raise
            last: BaseException = error
        except Exception as error:  # noqa: BLE001 - classified right below
            if not is_transient(error):
                raise
            if attempt == attempts:
                raise UnavailableError(f"S3 kept failing ({what}): {error}") from error
            last = error
        delay = backoff_s * 2 ** (attempt - 1) * (0.5 + random.random())
        log.warning("transient S3 error, retrying", extra={"what": what, "attempt": attempt, "error": str(last)})
        time.sleep(delay)
    raise AssertionError("unreachable")  # the loop returns or raises


class S3ObjectStore(ObjectStore):
    """Objects in `bucket` under `prefix`; keys map to `prefix/key`."""

    def __init__(  # noqa: PLR0913 - connection parameters
        self,
        client: Minio,
        bucket: str,
        prefix: str = "",
        *,
        part_size: int = 16 * 1024 * 1024,
        attempts: int = 5,
        backoff_s: float = 0.2,
    ) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.attempts = attempts
        self.backoff_s = backoff_s
        if not self._retry(lambda: client.bucket_exists(bucket), "bucket_exists"):
            self._retry(lambda: client.make_bucket(bucket), "make_bucket")

    @classmethod
    def connect(  # noqa: PLR0913 - connection parameters
        cls,
        url: str,
        *,
        endpoint: str,
        access_key: str,
        secret_key: str,
        secure: bool = False,
        region: str | None = None,
        **options: int | float,
    ) -> S3ObjectStore:
        """Open `s3://bucket/prefix` at `endpoint`; urllib3's own retries are off (ours are bounded)."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=10, read=120), maxsize=16, retries=False
        )
        client = Minio(
            endpoint, access_key=access_key, secret_key=secret_key, secure=secure, region=region, http_client=http
        )
        return cls(client, bucket, prefix, **options)  # type: ignore[arg-type]

    def _retry(self, call: Callable[[], T], what: str) -> T:
        return with_retries(call, what=what, attempts=self.attempts, backoff_s=self.backoff_s)

    def _name(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _folder(self, prefix: str) -> str:
        if not prefix:
            return f"{self.prefix}/" if self.prefix else ""
        return self._name(prefix) + "/"

    def put_bytes(self, key: str, data: bytes) -> None:
        name = self._name(key)

        def put() -> None:  # a fresh stream per attempt: a failed try may have consumed it
            self.client.put_object(self.bucket, name, io.BytesIO(data), len(data), part_size=self.part_size)

        self._retry(put, f"put {name}")

    def put_file(self, key: str, path: Path) -> None:
        name = self._name(key)
        self._retry(
            lambda: self.client.fput_object(self.bucket, name, str(path), part_size=self.part_size),
            f"put {name}",
        )

    def get_bytes(self, key: str) -> bytes:
        name = self._name(key)

        def get() -> bytes:
            response = self.client.get_object(self.bucket, name)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._retry(get, f"get {name}")

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        name = self._name(key)

        def get() -> bytes:
            response = self.client.get_object(self.bucket, name, offset=offset, length=length)
            try:
                return response.read()
            finally:
                response.close()
                response.release_conn()

        return self._retry(get, f"get {name} [{offset}:{offset + length}]")

    def get_file(self, key: str, path: Path) -> None:
        name = self._name(key)
        self._retry(lambda: self.client.fget_object(self.bucket, name, str(path)), f"get {name}")

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except ObjectNotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        name = self._name(key)
        stat = self._retry(lambda: self.client.stat_object(self.bucket, name), f"stat {name}")
        return int(stat.size or 0)

    def etag(self, key: str) -> str:
        """The object's ETag (`<md5>-<parts>` after a multipart upload)."""
        name = self._name(key)
        return str(self._retry(lambda: self.client.stat_object(self.bucket, name), f"stat {name}").etag)

    def list_children(self, prefix: str) -> list[str]:
        folder = self._folder(prefix)
        objects = self._retry(
            lambda: list(self.client.list_objects(self.bucket, prefix=folder, recursive=False)), f"list {folder}"
        )
        return sorted({str(o.object_name)[len(folder) :].rstrip("/") for o in objects} - {""})

    def list_keys(self, prefix: str) -> list[str]:
        folder = self._folder(prefix)
        base = len(self._folder(""))
        objects = self._retry(
            lambda: list(self.client.list_objects(self.bucket, prefix=folder, recursive=True)), f"list {folder}"
        )
        return sorted(str(o.object_name)[base:] for o in objects if not o.is_dir)

    def delete(self, key: str) -> None:
        name = self._name(key)
        self._retry(lambda: self.client.remove_object(self.bucket, name), f"delete {name}")

    def uri(self, key: str = "") -> str:
        base = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return f"{base}/{key}" if key else base
