"""Live drift states: a rolling `ReplayController` per name, fed one new stream partition at a time.

UpdateDrift(name, partition) loads the state, feeds the partition's rows to the core controller
(`ReplayController(rolling=True)`: histograms of fixed-size windows, Δ_shift over the last n
windows, r_enh by Eq. 14), saves it and returns the current replay ratio. The first update of a
name creates the state from a reference pool (bins fitted on it, its Δ_shift the initial one),
exactly as `ReplayController.from_training_pool` does in process.

Layout (object store, so every replica sees the same state)::

    drift/live/<name>/head.json           LiveHead: settings, bins, fed partitions, the current figures
    drift/live/<name>/state-000042.npz    the controller's state_dict after update 42 (head names it)

The head is written last (one atomic object), so a reader sees the previous or the new state,
never half of one. Updates of one name are serialised by a lock: a Redis lock when the platform
runs on Redis (any replica), else an flock under CROSSADAPT_HOME (one machine).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from crossadapt.models.spec import FeatureSpec
from crossadapt.transfer.drift.detector import DriftReport, FeatureDrift
from crossadapt.transfer.drift.histogram import HistogramBinner
from crossadapt.transfer.online.replay import ReplayController
from services.common.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, UnavailableError
from services.common.checks import checked_name
from services.common.settings import PlatformSettings
from services.common.storage import DatasetStore
from services.common.storage.datasets import partition_start
from services.common.storage.objects import ObjectNotFoundError
from services.drift_detector.pipeline import (
    DEFAULT_LIVE_WINDOW_ROWS,
    DriftSettings,
    _core,
    dataset_spec,
)
from services.common.storage.dataset_rows import partition_batches, scan

LIVE_PREFIX = "drift/live"
KEEP_HISTORY = 256  # replay-ratio history entries kept in the state (the head shows the current one)
KEEP_PARTITIONS = 1000  # fed partition ids kept for idempotent replays (older ones are refused by time)
StateLock = Callable[[str], AbstractContextManager[None]]


class LiveHead(BaseModel):
    """A live state's header: what it measures and its figures after the latest update."""

    model_config = ConfigDict(extra="forbid")

    name: str
    seq: int = Field(ge=0)
    reference: str
    reference_rows: int
    settings: DriftSettings
    feature_spec: FeatureSpec
    vocab_hash: str = ""
    vocab_sizes: list[int]
    numerical_edges: list[list[float]]
    feature_names: list[str]
    reference_report: DriftReport
    partitions: list[str] = Field(default_factory=list)  # "dataset/partition", oldest first
    last_partition_start: float | None = None  # UTC seconds of the latest fed partition
    replay_ratio: float
    shift: float
    source: str = "reference"
    rows: int = 0
    windows: int = 0
    features: list[FeatureDrift]
    updated_at: float = Field(default_factory=time.time)

    def binner(self) -> HistogramBinner:
        return HistogramBinner(self.vocab_sizes, [np.asarray(e) for e in self.numerical_edges], self.feature_names)


def _key(name: str, *parts: str) -> str:
    return "/".join((LIVE_PREFIX, name, *parts))


# ---- the controller's state as bytes ------------------------------------------------------------
_ARRAY_LISTS = ("pairs", "raw_pairs", "floor_pairs")


def pack_state(state: dict[str, Any], features: int) -> bytes:
    """ReplayController.state_dict() → one .npz (arrays as arrays; the rest as JSON)."""
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    for key, value in state.items():
        if key in _ARRAY_LISTS:
            arrays[key] = np.stack(value) if value else np.zeros((0, features))
        elif isinstance(value, np.ndarray):
            arrays[key] = value
        elif key == "history":
            meta[key] = value[-KEEP_HISTORY:]
        else:
            meta[key] = value
    arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def unpack_state(data: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    state: dict[str, Any] = json.loads(arrays.pop("meta_json").tobytes())
    for key, value in arrays.items():
        state[key] = list(value) if key in _ARRAY_LISTS else value
    for key in ("last_window", "last_halves"):
        state.setdefault(key, None)
    return state


# ---- locks -----------------------------------------------------------------------------------------
def state_lock(settings: PlatformSettings, timeout_s: float = 120.0) -> StateLock:
    """One writer per live state name: Redis lock on a Redis platform, else an flock on this machine."""
    if settings.redis_results:
        import redis

        client = redis.Redis.from_url(str(settings.result_backend))

        @contextmanager
        def redis_lock(name: str) -> Iterator[None]:
            lock = client.lock(f"crossadapt:drift-live:{name}", timeout=timeout_s, blocking_timeout=timeout_s)
            if not lock.acquire():
                raise UnavailableError(f"live state {name!r} is being updated by another call; retry", field="name")
            try:
                yield
            finally:
                try:
                    lock.release()
                except redis.exceptions.LockError:  # expired meanwhile: the update ran longer than the lease
                    pass

        return redis_lock
    folder = settings.home / "locks"

    @contextmanager
    def file_lock(name: str) -> Iterator[None]:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"drift-live-{hashlib.sha256(name.encode()).hexdigest()[:24]}.lock"
        with open(path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    return file_lock


# ---- the states ----------------------------------------------------------------------------------------
class LiveDrift:
    """Create, feed and read live drift states."""

    def __init__(self, datasets: DatasetStore, lock: StateLock) -> None:
        self.datasets = datasets
        self.objects = datasets.objects
        self.lock = lock

    def names(self) -> list[str]:
        return sorted(self._names(LIVE_PREFIX))

    def _names(self, prefix: str) -> Iterator[str]:
        """State names (they may contain '/'): folders holding a head.json."""
        for key in self.objects.list_keys(prefix):
            if key.endswith("/head.json"):
                yield key[len(LIVE_PREFIX) + 1: -len("/head.json")]

    def get(self, name: str) -> LiveHead:
        checked_name(name, "name")
        try:
            return LiveHead.model_validate_json(self.objects.get_bytes(_key(name, "head.json")))
        except ObjectNotFoundError:
            raise NotFoundError(f"no live drift state named {name!r}", field="name") from None

    def update(self, name: str, dataset: str, partition: str, *, reference: str = "",
               settings: DriftSettings | None = None) -> LiveHead:
        """Feed `dataset/partition` into state `name` (created from `reference` first if new)."""
        checked_name(name, "name")
        checked_name(dataset, "partition.name")
        if not partition:
            raise InvalidArgumentError("the partition id is empty (set partition.position.partition)",
                                       field="partition.position.partition")
        try:
            start = partition_start(partition).timestamp()
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(exc.message, field="partition.position.partition") from None
        with self.lock(name):
            try:
                head = self.get(name)
            except NotFoundError:
                if not reference:
                    raise NotFoundError(f"no live drift state named {name!r}; pass a reference to create it",
                                        field="reference") from None
                head, controller = self._create(name, reference, settings)
            else:
                self._check_same(head, reference, settings)
                controller = self._controller(head)
            key = f"{dataset}/{partition}"
            if key in head.partitions:
                return head  # fed already: an idempotent replay
            if head.last_partition_start is not None and start < head.last_partition_start:
                raise FailedPreconditionError(
                    f"partition {key} is older than the latest one fed ({head.partitions[-1]}); live states take "
                    "partitions in time order", field="partition")
            if partition not in self.datasets.partitions(dataset):
                raise NotFoundError(f"no partition {key}", field="partition")
            for batch in partition_batches(self.datasets, dataset, partition, head.feature_spec, head.vocab_hash):
                _core(lambda batch=batch: controller.observe(batch.categorical, batch.numerical), "partition",
                      f"partition {key}")
            return self._save(head, controller, key, start)

    # -- helpers ---------------------------------------------------------------------------------------
    def _create(self, name: str, reference: str, settings: DriftSettings | None) -> tuple[LiveHead, ReplayController]:
        settings = settings or DriftSettings.model_validate({"replay": {"rolling": True}})
        if not settings.window_rows:
            settings = settings.model_copy(update={
                "window_rows": DEFAULT_LIVE_WINDOW_ROWS,
                "replay": settings.replay.model_copy(update={"window_rows": DEFAULT_LIVE_WINDOW_ROWS})})
        spec, vocab_hash = dataset_spec(self.datasets, reference, "reference")
        columns, index = scan(self.datasets, reference, spec, ("categorical", "numerical"))
        categorical, numerical = columns["categorical"], columns["numerical"]
        controller = _core(lambda: ReplayController.from_training_pool(
            settings.replay, categorical if spec.categorical else None, numerical if spec.numerical else None,
            feature_names=[f.name for f in spec.categorical] + list(spec.numerical),
            vocab_sizes=[f.vocab_size for f in spec.categorical]), "reference", f"reference {reference!r}")
        binner, report = controller.binner, controller.initial_report
        assert binner is not None and report is not None
        head = LiveHead(
            name=name, seq=0, reference=reference, reference_rows=index.total, settings=settings, feature_spec=spec,
            vocab_hash=vocab_hash, vocab_sizes=binner.vocab_sizes,
            numerical_edges=[e.tolist() for e in binner.numerical_edges], feature_names=binner.feature_names,
            reference_report=report, replay_ratio=controller.ratio, shift=report.shift, features=report.per_feature)
        return head, controller

    @staticmethod
    def _check_same(head: LiveHead, reference: str, settings: DriftSettings | None) -> None:
        if reference and reference != head.reference:
            raise InvalidArgumentError(f"live state {head.name!r} measures against {head.reference!r}, not "
                                       f"{reference!r}", field="reference")
        if settings is not None:
            wanted = settings if settings.window_rows else settings.model_copy(update={
                "window_rows": head.settings.window_rows,
                "replay": settings.replay.model_copy(update={"window_rows": head.settings.window_rows})})
            if wanted != head.settings:
                raise InvalidArgumentError(f"live state {head.name!r} was created with another config",
                                           field="config")

    def _controller(self, head: LiveHead) -> ReplayController:
        controller = ReplayController(head.settings.replay, head.reference_rows, initial_shift=head.reference_report.shift,
                                      binner=head.binner())
        try:
            data = self.objects.get_bytes(_key(head.name, f"state-{head.seq:06d}.npz"))
        except ObjectNotFoundError:
            raise FailedPreconditionError(f"live state {head.name!r} lost its controller state {head.seq}",
                                          field="name") from None
        controller.load_state_dict(unpack_state(data))
        return controller

    def _save(self, head: LiveHead, controller: ReplayController, key: str, start: float) -> LiveHead:
        seq = head.seq + 1
        self.objects.put_bytes(_key(head.name, f"state-{seq:06d}.npz"),
                               pack_state(controller.state_dict(), len(head.feature_names)))
        rolling = controller.rolling_report()
        report = rolling if rolling is not None else head.reference_report
        state = controller.state_dict()
        updated = head.model_copy(update={
            "seq": seq, "partitions": [*head.partitions, key][-KEEP_PARTITIONS:], "last_partition_start": start,
            "replay_ratio": controller.ratio, "shift": controller.shift, "source": "stream" if rolling else "reference",
            "rows": int(state["rows"]), "windows": int(state["windows"]), "features": report.per_feature,
            "updated_at": time.time()})
        self.objects.put_bytes(_key(head.name, "head.json"), updated.model_dump_json().encode())
        if head.seq:
            self.objects.delete(_key(head.name, f"state-{head.seq:06d}.npz"))
        return updated
