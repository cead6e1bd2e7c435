"""Operation records (id, state, stage, progress, error, result) that outlive any one process.

The record lives next to Celery's results: in Redis when the result backend is Redis, else in
files under `home/operations`. Any gRPC server replica or restart reads the same state; workers
write progress per work unit (one shard task = one unit), so concurrent tasks never overwrite
each other's progress, and state changes go through `update`, an atomic read-modify-write
(Redis WATCH/MULTI, or an flock on the record file).

Records expire `ttl_s` after they were created (settings `operation_ttl_s`, 7 days by default):
Redis keys carry the TTL themselves (updates keep it); file records are swept when listed.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.errors import NotFoundError, PlatformError


DEFAULT_TTL_S = 7 * 24 * 3600.0


class OperationState(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"


TERMINAL_STATES = frozenset({OperationState.SUCCEEDED, OperationState.FAILED, OperationState.CANCELLED})


class OperationRecord(BaseModel):
    """One long-running operation; `params` is the service's own plan (JSON)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: str
    state: OperationState = OperationState.PENDING
    stage: str = ""
    units: int = Field(default=1, ge=1, description="Work units; progress = Σ unit fractions / units.")
    error: dict[str, str | None] | None = None
    result: dict[str, str] | None = None
    details: dict[str, Any] = Field(default_factory=dict, description="Reports beyond the result (JSON).")
    params: dict[str, Any] = Field(default_factory=dict)
    task_ids: list[str] = Field(default_factory=list)
    resends: int = Field(default=0, ge=0, description="Times the stall watchdog re-sent its work (services.common.watchdog).")
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    def failed(self, error: PlatformError) -> OperationRecord:
        return self.model_copy(update={"state": OperationState.FAILED, "error": error.to_dict()})


class OperationNotFoundError(NotFoundError):
    """No operation with that id."""


Mutation = Callable[[OperationRecord], OperationRecord | None]


class OperationStore(ABC):
    """Create, read and atomically update operation records; per-unit progress."""

    @abstractmethod
    def create(self, record: OperationRecord) -> bool:
        """Store a new record; False (and no change) if the id exists already."""

    @abstractmethod
    def get(self, operation_id: str) -> OperationRecord: ...

    @abstractmethod
    def update(self, operation_id: str, mutate: Mutation) -> OperationRecord:
        """Apply `mutate` atomically; it returns the new record, or None to leave it unchanged."""

    @abstractmethod
    def set_progress(self, operation_id: str, unit: str, fraction: float) -> None: ...

    @abstractmethod
    def unit_progress(self, operation_id: str) -> dict[str, float]: ...

    @abstractmethod
    def count_attempt(self, operation_id: str, unit: str) -> int:
        """Increment and return how many times `unit` was started (redeliveries included)."""

    @abstractmethod
    def list_ids(self) -> list[str]: ...

    @abstractmethod
    def last_beat(self, operation_id: str) -> float:
        """When a worker last reported progress or started a unit of the operation (0.0 if never)."""

    def last_activity(self, record: OperationRecord) -> float:
        """The newest sign of life: a record change (stage, lease heartbeat, ...) or a progress beat."""
        return max(record.updated_at, self.last_beat(record.id))

    def progress(self, record: OperationRecord) -> float:
        if record.state == OperationState.SUCCEEDED:
            return 1.0
        done = sum(min(max(v, 0.0), 1.0) for v in self.unit_progress(record.id).values())
        return min(done / record.units, 1.0)

    def transition(self, operation_id: str, allowed: set[OperationState], **changes: Any) -> OperationRecord | None:
        """Set `changes` if the current state is in `allowed`; returns the new record or None."""
        applied: list[OperationRecord] = []

        def mutate(record: OperationRecord) -> OperationRecord | None:
            if record.state not in allowed:
                return None
            applied.append(record.model_copy(update=changes))
            return applied[-1]

        self.update(operation_id, mutate)
        return applied[-1] if applied else None

    def fail(self, operation_id: str, error: PlatformError) -> OperationRecord | None:
        """Mark a non-terminal operation FAILED with `error` (a terminal one keeps its state)."""
        return self.transition(
            operation_id, {OperationState.PENDING, OperationState.RUNNING},
            state=OperationState.FAILED, error=error.to_dict(),
        )


def _check_id(operation_id: str) -> str:
    if not operation_id or not all(c.isalnum() or c in "-_" for c in operation_id) or len(operation_id) > 100:
        raise OperationNotFoundError(f"no operation {operation_id!r}", field="operation_id")
    return operation_id


class FileOperationStore(OperationStore):
    """`<root>/<id>/record.json` (+ `progress/<unit>`, `attempts/<unit>`); updates hold an flock.

    Creation is atomic: the folder is filled under a temporary name and renamed into place, so a
    reader never sees an id without its record.
    """

    def __init__(self, root: Path, ttl_s: float = DEFAULT_TTL_S) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.ttl_s = ttl_s

    def _dir(self, operation_id: str) -> Path:
        return self.root / _check_id(operation_id)

    @staticmethod
    def _write(path: Path, text: str) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)

    def create(self, record: OperationRecord) -> bool:
        folder = self._dir(record.id)
        if folder.exists():
            return False
        staging = self.root / f".new-{record.id}-{os.getpid()}-{time.monotonic_ns()}"
        staging.mkdir()
        (staging / "progress").mkdir()
        (staging / "attempts").mkdir()
        (staging / "record.json").write_text(record.model_dump_json())
        try:
            os.rename(staging, folder)  # atomic; fails if another creator won the race
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            return False
        return True

    def get(self, operation_id: str) -> OperationRecord:
        path = self._dir(operation_id) / "record.json"
        try:
            return OperationRecord.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise OperationNotFoundError(f"no operation {operation_id!r}", field="operation_id") from None

    def update(self, operation_id: str, mutate: Mutation) -> OperationRecord:
        folder = self._dir(operation_id)
        if not folder.is_dir():
            raise OperationNotFoundError(f"no operation {operation_id!r}", field="operation_id")
        with open(folder / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            record = self.get(operation_id)
            changed = mutate(record)
            if changed is None:
                return record
            changed = changed.model_copy(update={"updated_at": time.time()})
            self._write(folder / "record.json", changed.model_dump_json())
            return changed

    def set_progress(self, operation_id: str, unit: str, fraction: float) -> None:
        self._write(self._dir(operation_id) / "progress" / unit, repr(float(fraction)))
        self._beat(operation_id)

    def _beat(self, operation_id: str) -> None:
        self._write(self._dir(operation_id) / "beat", repr(time.time()))

    def last_beat(self, operation_id: str) -> float:
        try:
            return float((self._dir(operation_id) / "beat").read_text())
        except (FileNotFoundError, ValueError):
            return 0.0

    def unit_progress(self, operation_id: str) -> dict[str, float]:
        folder = self._dir(operation_id) / "progress"
        values = {}
        for path in folder.iterdir() if folder.is_dir() else []:
            if not path.name.startswith("."):
                values[path.name] = float(path.read_text())
        return values

    def count_attempt(self, operation_id: str, unit: str) -> int:
        path = self._dir(operation_id) / "attempts" / unit
        with open(path, "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            count = int(handle.read() or 0) + 1
            handle.seek(0)
            handle.truncate()
            handle.write(str(count))
        self._beat(operation_id)
        return count

    def list_ids(self) -> list[str]:
        self.purge_expired()
        return sorted(p.name for p in self.root.iterdir() if not p.name.startswith(".") and (p / "record.json").is_file())

    def purge_expired(self, now: float | None = None) -> int:
        """Delete records created more than `ttl_s` ago; returns how many."""
        cutoff = (time.time() if now is None else now) - self.ttl_s
        removed = 0
        for folder in self.root.iterdir():
            record = folder / "record.json"
            try:
                if not folder.name.startswith(".") and OperationRecord.model_validate_json(
                        record.read_text()).created_at < cutoff:
                    shutil.rmtree(folder, ignore_errors=True)
                    removed += 1
            except (OSError, ValueError):
                continue
        return removed


class RedisOperationStore(OperationStore):
    """Keys `crossadapt:op:<id>` (record JSON), `…:progress` and `…:attempts` hashes, `…:beat` (time), index `crossadapt:ops`.

    Every key expires `ttl_s` after the operation was created; the index (a sorted set scored by
    creation time) drops expired ids when listed. Record and index are created by one Lua script.
    """

    INDEX = "crossadapt:ops"
    # KEYS: record, index; ARGV: json, ttl ms, created_at, id. SET NX + ZADD in one atomic step.
    _CREATE = """
    if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
        redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
        return 1
    end
    return 0
    """

    def __init__(self, url: str, ttl_s: float = DEFAULT_TTL_S) -> None:
        import redis  # the platform extra; only needed when the result backend is Redis

        self.redis = redis.Redis.from_url(url)
        self._watch_error = redis.WatchError
        self.ttl_s = ttl_s
        self._create_script = self.redis.register_script(self._CREATE)

    @property
    def _ttl_ms(self) -> int:
        return max(int(self.ttl_s * 1000), 1)

    def _key(self, operation_id: str, suffix: str = "") -> str:
        return f"crossadapt:op:{_check_id(operation_id)}{suffix}"

    def create(self, record: OperationRecord) -> bool:
        return bool(self._create_script(
            keys=[self._key(record.id), self.INDEX],
            args=[record.model_dump_json(), self._ttl_ms, record.created_at, record.id],
        ))

    def get(self, operation_id: str) -> OperationRecord:
        raw = self.redis.get(self._key(operation_id))
        if raw is None:
            raise OperationNotFoundError(f"no operation {operation_id!r}", field="operation_id")
        return OperationRecord.model_validate_json(raw)

    def update(self, operation_id: str, mutate: Mutation) -> OperationRecord:
        key = self._key(operation_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    raw = pipe.get(key)
                    if raw is None:
                        raise OperationNotFoundError(f"no operation {operation_id!r}", field="operation_id")
                    record = OperationRecord.model_validate_json(raw)
                    changed = mutate(record)
                    if changed is None:
                        pipe.unwatch()
                        return record
                    changed = changed.model_copy(update={"updated_at": time.time()})
                    pipe.multi()
                    pipe.set(key, changed.model_dump_json(), keepttl=True)
                    pipe.execute()
                    return changed
                except self._watch_error:
                    continue  # another writer won the race: re-read and re-apply

    def _expire_with_record(self, pipe: Any, operation_id: str, key: str) -> None:
        """Give a side key the record's remaining lifetime (the whole ttl if the record is gone)."""
        remaining = self.redis.pttl(self._key(operation_id))
        pipe.pexpire(key, remaining if remaining and remaining > 0 else self._ttl_ms)

    def set_progress(self, operation_id: str, unit: str, fraction: float) -> None:
        key = self._key(operation_id, ":progress")
        with self.redis.pipeline() as pipe:
            pipe.hset(key, unit, repr(float(fraction)))
            self._expire_with_record(pipe, operation_id, key)
            self._beat(pipe, operation_id)
            pipe.execute()

    def _beat(self, pipe: Any, operation_id: str) -> None:
        key = self._key(operation_id, ":beat")
        pipe.set(key, repr(time.time()))
        self._expire_with_record(pipe, operation_id, key)

    def last_beat(self, operation_id: str) -> float:
        raw = self.redis.get(self._key(operation_id, ":beat"))
        return float(raw) if raw is not None else 0.0

    def unit_progress(self, operation_id: str) -> dict[str, float]:
        raw = self.redis.hgetall(self._key(operation_id, ":progress"))
        return {k.decode(): float(v) for k, v in raw.items()}

    def count_attempt(self, operation_id: str, unit: str) -> int:
        key = self._key(operation_id, ":attempts")
        with self.redis.pipeline() as pipe:
            pipe.hincrby(key, unit, 1)
            self._expire_with_record(pipe, operation_id, key)
            self._beat(pipe, operation_id)
            count = pipe.execute()[0]
        return int(count)

    def list_ids(self) -> list[str]:
        self.redis.zremrangebyscore(self.INDEX, "-inf", time.time() - self.ttl_s)
        return [m.decode() for m in self.redis.zrange(self.INDEX, 0, -1)]


def open_operation_store(settings: Any) -> OperationStore:
    """Redis when the Celery result backend is Redis, else files under `settings.operations_dir`."""
    if settings.redis_results:
        return RedisOperationStore(str(settings.result_backend), ttl_s=settings.operation_ttl_s)
    return FileOperationStore(settings.operations_dir, ttl_s=settings.operation_ttl_s)
