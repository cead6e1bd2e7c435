"""Checks every operation's Start and task share: refs and names of the request, the settings against
the core's ranges, vocabulary agreement, and the rows a task reads.

Start handlers check what they can before any worker runs (INVALID_ARGUMENT / NOT_FOUND /
FAILED_PRECONDITION naming the request field); a task checks the data it reads (FAILED_PRECONDITION
naming the dataset and column), vectorised per column, never per row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, ValidationError

from crossadapt.data.arrays import SplitArrays
from crossadapt.models.spec import FeatureSpec
from services.common.errors import FailedPreconditionError, InvalidArgumentError, NotFoundError, PlatformError
from services.common.model_io import read_all, read_recent, schema_spec
from services.common.storage.checkpoints import CheckpointStore, PublishedCheckpoint, check_name
from services.common.storage.datasets import DatasetStore


class CheckpointPin(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"


def checked_name(name: str, field: str) -> str:
    if not name:
        raise InvalidArgumentError("is empty", field=field)
    try:
        return check_name(name)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(exc.message, field=field) from None


def resolve_ref(store: CheckpointStore, ref: Any, field: str) -> PublishedCheckpoint:
    """A `CheckpointRef` → the published checkpoint (NOT_FOUND / INVALID_ARGUMENT naming `field`)."""
    checked_name(ref.name, f"{field}.name")
    try:
        return store.resolve(ref.name, ref.version or None)
    except NotFoundError as exc:
        raise NotFoundError(exc.message, field=field) from None
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(exc.message, field=f"{field}.version") from None


def dataset_schema(datasets: DatasetStore, name: str, field: str) -> tuple[FeatureSpec, str, list[str]]:
    """(feature spec, vocabulary hash, column names) from the dataset's first partition."""
    checked_name(name, f"{field}.name")
    try:
        first = datasets.first_schema(name)  # the Parquet footer, not the partition's data
    except NotFoundError as exc:
        raise NotFoundError(exc.message, field=field) from None
    if first is None:
        raise FailedPreconditionError(f"dataset {name!r} has no rows", field=field)
    schema, partition = first
    try:
        spec, vocab_hash = schema_spec(schema, f"{name}/{partition}")
    except PlatformError as exc:  # no or unreadable spec: the caller named a dataset it cannot use
        raise InvalidArgumentError(exc.message, field=field) from None
    return spec, vocab_hash, list(schema.names)


def check_vocabularies(hashes: dict[str, str]) -> str:
    """The one vocabulary hash the non-empty `hashes` ({request field: hash}) agree on; INVALID_ARGUMENT if not."""
    known = {field: value for field, value in hashes.items() if value}
    if len(set(known.values())) > 1:
        first, *others = known.items()
        odd = next(field for field, value in others if value != first[1])
        raise InvalidArgumentError(
            "vocabulary mismatch: " + ", ".join(f"{field} {value[:12]}…" for field, value in known.items())
            + " (row ids would mean other feature values)", field=odd)
    return next(iter(known.values()), "")


def validate(model: type[BaseModel], raw: dict[str, Any], *, prefix: str,
             rename: dict[tuple[str, ...], str] | None = None) -> Any:
    """`model.model_validate(raw)`; the first error as INVALID_ARGUMENT naming the request field.

    Nested core sections stand for the request's flat fields: `rename` maps an error location to the
    request's name for it (default: ("distillation", "kd_weight") is "kd_weight", a section is its fields).
    """
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = tuple(str(part) for part in error["loc"])
        renamed = (rename or {}).get(loc)
        if renamed is None:
            renamed = ".".join(part for part in loc if part not in ("distillation", "optim", "online"))
        message = "unknown field" if error["type"] == "extra_forbidden" else error["msg"].removeprefix("Value error, ")
        raise InvalidArgumentError(message, field=".".join(p for p in (prefix, renamed) if p)) from None


def adaptive_kd_config(message: Any, field: str) -> Any:
    """A `crossadapt.v1.AdaptiveKD` as the core's `AdaptiveKDConfig` (unset fields: the core's defaults, as
    `crossadapt switch` reads `adaptive_kd`); a bad value is INVALID_ARGUMENT naming `field`'s sub-field."""
    import math

    from google.protobuf.json_format import MessageToDict

    from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig

    raw = MessageToDict(message, preserving_proto_field_name=True)
    for name, value in [*raw.items(), *((f"{stage}.{k}", v) for stage in ("online", "offline")
                                        for k, v in (raw.get(stage) or {}).items())]:
        if (isinstance(value, float) and not math.isfinite(value)) or value in ("NaN", "Infinity", "-Infinity"):
            raise InvalidArgumentError(f"must be a finite number, got {value}", field=f"{field}.{name}")
    rename = {(stage, name): f"{stage}.{name}" for stage in ("online", "offline")
              for name in ("ema_window", "warmup", "max_change")}
    return validate(AdaptiveKDConfig, raw, prefix=field, rename=rename)


# ---- the rows a task reads -----------------------------------------------------------------------
def read_rows(datasets: DatasetStore, name: str, spec: FeatureSpec, field: str) -> SplitArrays:
    """A whole dataset (sample, validation rows), checked: bad data fails naming the dataset and column."""
    try:
        arrays = read_all(datasets, name, spec)
    except pa.ArrowInvalid as exc:
        raise FailedPreconditionError(f"dataset {name!r} has an unreadable partition: {exc}", field=field) from exc
    check_rows(arrays, spec, f"{field} {name!r}")
    return arrays


def read_recent_rows(datasets: DatasetStore, name: str, spec: FeatureSpec, field: str, need: int,
                     count: Callable[[SplitArrays], int] = len) -> SplitArrays:
    """A dataset's newest partitions holding `need` rows (model_io.read_recent), checked as read_rows checks."""
    try:
        arrays = read_recent(datasets, name, spec, need, count)
    except pa.ArrowInvalid as exc:
        raise FailedPreconditionError(f"dataset {name!r} has an unreadable partition: {exc}", field=field) from exc
    check_rows(arrays, spec, f"{field} {name!r}")
    return arrays


def check_rows(arrays: SplitArrays, spec: FeatureSpec, where: str) -> None:
    """Ids inside each field's vocabulary, finite numbers, labels in [0, 1] (vectorised, per column)."""
    sizes = np.array([f.vocab_size for f in spec.categorical], dtype=np.int64)
    if len(sizes) and len(arrays):
        bad = (arrays.categorical.min(axis=0) < 0) | (arrays.categorical.max(axis=0) >= sizes)
        if bad.any():
            column = int(np.flatnonzero(bad)[0])
            raise FailedPreconditionError(
                f"{where}: field {spec.categorical[column].name!r} has ids outside 0..{sizes[column] - 1}",
                field=spec.categorical[column].name)
    checks = {"label": arrays.label, "teacher_logit": arrays.teacher_logit}
    checks.update({name: arrays.numerical[:, i] for i, name in enumerate(spec.numerical)})
    for name, column in checks.items():
        if column is not None and not np.isfinite(column).all():
            raise FailedPreconditionError(f"{where}: column {name!r} holds NaN or infinite values", field=name)
    if len(arrays) and (arrays.label.min() < 0 or arrays.label.max() > 1):
        raise FailedPreconditionError(f"{where}: labels outside [0, 1]", field="label")
