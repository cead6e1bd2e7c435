"""Core objects ↔ the platform's stores: models as checkpoints, splits as time-partitioned datasets.

Services pass refs (checkpoint name/version, dataset name), never Python objects. This module is
the one place that turns a core model into a store checkpoint and back, and a core `SplitArrays`
into Parquet partitions and back, so every service reads and writes the same layout.

A model checkpoint in the store (`checkpoints/<name>/vNNNNNN/`)::

    manifest.json                                # the core CheckpointManifest (architecture, config, spec, ...)
    model.safetensors                            # the model's state_dict (crossadapt.checkpoint format); its
                                                 # embedding tables are row ranges of it, listed as shards in
                                                 # extra.tables (offset + sha256 each: storage.tables)
    vocab/index.json, vocab/field_NNN.parquet    # the vocabulary (raw value → row), when known

A split as a dataset (`datasets/<name>/ts=…/data.parquet`): one column per categorical field
(int32 row ids, named as in the feature spec), one per numerical field (float32), `label`
(float32) and the optional columns (`conversion`, `timestamp`, `user`, `prob`, `teacher_logit`).
The feature spec and vocabulary hash ride in the Parquet schema metadata, so a reader can refuse a
partition whose schema does not match before it trains on it. A split written with its vocabulary also
stores that version's values beside the partitions (`datasets/<name>/_vocabulary/vNNNNNN/`, the
checkpoint's vocab layout), so a service that grows its models to a newer version the stream's ids are
of (the online co-distiller) can publish them with the values that map raw values to the grown rows.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from crossadapt.checkpoint import (
    MANIFEST_NAME,
    TENSORS_NAME,
    CheckpointError,
    build_manifest,
    load_checkpoint,
    save_checkpoint,
)
from crossadapt.data.arrays import SplitArrays
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models.spec import FeatureSpec
from services.common.errors import DataLossError, FailedPreconditionError, InvalidArgumentError
from services.common.storage.checkpoints import CheckpointNotFoundError, CheckpointStore, PublishedCheckpoint, check_name
from services.common.storage.datasets import DatasetPosition, DatasetStore
from services.common.storage.tables import TABLE_TENSOR, ShardEntry, TableLayout, shard_bounds, shard_path

VOCAB_DIR = "vocab"
VOCAB_INDEX = "index.json"  # a saved vocabulary's index (crossadapt.data.vocabulary), written last
DATASET_VOCAB_DIR = "_vocabulary"  # beside a dataset's partitions: a folder per stored version
_VOCAB_VERSION_DIR = re.compile(r"^v\d{6}$")
SPEC_METADATA_KEY = b"crossadapt.feature_spec"
VOCAB_HASH_METADATA_KEY = b"crossadapt.vocab_hash"
VOCAB_VERSION_METADATA_KEY = b"crossadapt.vocab_version"
OPTIONAL_COLUMNS = ("conversion", "timestamp", "user", "prob", "teacher_logit")
_EPOCH = datetime(2026, 1, 1, tzinfo=timezone.utc)


# ---- models -------------------------------------------------------------------------------------
def publish_model(  # noqa: PLR0913 - manifest fields
    checkpoints: CheckpointStore,
    name: str,
    model: Any,
    *,
    feature_spec: FeatureSpec,
    vocab_hash: str,
    vocabulary: Vocabulary | None = None,
    parent: str | None = None,
    metrics: Mapping[str, float | int | None] | None = None,
    extra: Mapping[str, Any] | None = None,
    owner: str = "upload",
    table_shards: int | None = None,
    operation_id: str | None = None,
    version: str | None = None,
    files: Mapping[str, bytes] | None = None,
    tables: bool = True,
) -> PublishedCheckpoint:
    """Publish a core model (and its tables, sharded for projection) as the next version of `name`.

    An operation's output: `operation_id` is recorded in the manifest (`extra.operation_id`, also the
    claim's owner); with `version` (claimed by that operation at its start) the model is published into
    that version, and publishing it again returns the published one (a retried task), while a version
    published by another operation is FAILED_PRECONDITION. `files` ({relpath: bytes}) ride along (a
    trainer's state); `tables=False` leaves out the sharded tables (a checkpoint nobody projects).
    """
    if version is not None:
        if operation_id is None:
            raise InvalidArgumentError("publishing into a claimed version needs the operation that claimed it",
                                       field="operation_id")
        done = published_by(checkpoints, name, version, operation_id)
        if done is not None:
            return done
    if vocabulary is not None and vocabulary.hash != vocab_hash:
        raise InvalidArgumentError(
            f"vocabulary hash {vocabulary.hash[:12]}… is not the model's {vocab_hash[:12]}…", field="vocabulary")
    with tempfile.TemporaryDirectory(prefix="crossadapt-publish-") as tmp:
        folder = Path(tmp) / "ckpt"
        core = save_checkpoint(folder, model, feature_spec=feature_spec, vocab_hash=vocab_hash, metrics=metrics,
                               parent=parent, extra=extra)
        (folder / MANIFEST_NAME).unlink()  # the store writes its own manifest, last
        layouts = write_tables(folder, model, table_shards) if tables else {}
        if vocabulary is not None:
            vocabulary.save(folder / VOCAB_DIR)
        for relpath, data in (files or {}).items():
            (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
            (folder / relpath).write_bytes(data)
        fields: dict[str, Any] = dict(
            architecture=core.architecture, config=core.config, feature_spec=feature_spec, vocab_hash=vocab_hash,
            metrics=core.metrics, parent=parent,
            extra={**core.extra, **({"tables": layouts} if tables else {}), "has_vocabulary": vocabulary is not None,
                   **({"operation_id": operation_id} if operation_id is not None else {})})
        if version is None:
            return checkpoints.publish_folder(name, folder, owner=operation_id or owner, **fields)
        paths = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        # Each file is hashed once, as it is uploaded (write_file's entry): hashing the folder first too cost a
        # co-distiller's checkpoint a second pass over every table.
        entries = checkpoints.write_files(name, version, paths)
        manifest = build_manifest({}, **fields).model_copy(update={"files": entries})
        return checkpoints.publish_manifest(name, version, manifest)


def published_by(checkpoints: CheckpointStore, name: str, version: str, operation_id: str,
                 ) -> PublishedCheckpoint | None:
    """`name/version` if `operation_id` published it already (a retry after the manifest was written), else
    None; FAILED_PRECONDITION if another operation did."""
    try:
        existing = checkpoints.resolve(name, version)
    except CheckpointNotFoundError:
        return None
    if existing.manifest.extra.get("operation_id") != operation_id:
        raise FailedPreconditionError(f"{existing.ref} was published by another operation", field=name)
    return existing


ROWS_PER_SHARD = 1 << 20  # a table is split into shards of about this many rows (projection maps over them)


def write_tables(folder: Path, model: Any, num_shards: int | None = None) -> dict[str, Any]:
    """The model's embedding tables in the sharded table layout (a reader such as the projector maps over shards).

    A float32 table is not written again: its shards are row ranges of `folder/model.safetensors`, each with its
    offset and sha256 (a table of a CTR model is most of its bytes, so a second copy nearly doubled what every
    published checkpoint wrote and stored). A table of another dtype is written as shard files under `tables/`.
    `num_shards` None: ceil(rows / ROWS_PER_SHARD) per table, so the many small tables of a CTR model are one
    shard each and only the large ones are split.
    """
    embedding = getattr(model, "embedding", None)
    if embedding is None or not hasattr(embedding, "table_names"):
        return {}
    stored = _stored_tensors(folder / TENSORS_NAME)
    names = {id(parameter): name for name, parameter in model.state_dict(keep_vars=True).items()}
    layouts: dict[str, Any] = {}
    for table in embedding.table_names():
        parameter, first_row, rows = embedding.locate_table(table)
        dim = int(parameter.shape[1])
        bounds = shard_bounds(rows, num_shards or max(1, -(-rows // ROWS_PER_SHARD)))
        where = stored.get(names.get(id(parameter), ""))
        if where is not None and where[1] == "F32" and tuple(where[2]) == tuple(parameter.shape):
            shards = _range_shards(folder / TENSORS_NAME, where[0] + first_row * dim * 4, bounds, dim)
        else:
            shards = _file_shards(folder, table, embedding.get_table(table).detach().float().cpu().numpy(), bounds)
        layouts[table] = TableLayout(rows=rows, dim=dim, shards=tuple(shards)).model_dump(mode="json")
    return layouts


def _stored_tensors(path: Path) -> dict[str, tuple[int, str, list[int]]]:
    """A safetensors file's tensors: name → (first data byte in the file, dtype, shape)."""
    with open(path, "rb") as handle:
        header_size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(header_size))
    return {name: (8 + header_size + int(info["data_offsets"][0]), str(info["dtype"]), list(info["shape"]))
            for name, info in header.items() if name != "__metadata__"}


def _range_shards(path: Path, table_offset: int, bounds: list[tuple[int, int]], dim: int) -> list[ShardEntry]:
    """Row ranges of a table stored from byte `table_offset` of `path`, each with its own digest."""
    import hashlib
    import mmap

    shards = []
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        for start, stop in bounds:
            offset = table_offset + start * dim * 4
            digest = hashlib.sha256(memoryview(data)[offset:offset + (stop - start) * dim * 4]).hexdigest()
            shards.append(ShardEntry(file=TENSORS_NAME, start=start, rows=stop - start, offset=offset, sha256=digest))
    return shards


def _file_shards(folder: Path, table: str, weights: np.ndarray, bounds: list[tuple[int, int]]) -> list[ShardEntry]:
    from safetensors.numpy import save_file

    shards = []
    for index, (start, stop) in enumerate(bounds):
        relpath = shard_path(table, index)
        (folder / relpath).parent.mkdir(parents=True, exist_ok=True)
        save_file({TABLE_TENSOR: np.ascontiguousarray(weights[start:stop])}, str(folder / relpath))
        shards.append(ShardEntry(file=relpath, start=start, rows=stop - start))
    return shards


def fetch_checkpoint(checkpoints: CheckpointStore, name: str, version: str | None, dest: Path,
                     ) -> PublishedCheckpoint:
    """Download a published checkpoint (every file verified) into `dest` with a core manifest."""
    published = checkpoints.fetch(name, version or None, dest)
    (dest / MANIFEST_NAME).write_text(published.manifest.model_dump_json(indent=2))
    return published


def load_model(checkpoints: CheckpointStore, name: str, version: str | None = None,
               cache_dir: Path | None = None) -> tuple[Any, PublishedCheckpoint]:
    """The model of a published checkpoint (eval mode) and its ref; FAILED_PRECONDITION if it holds no model."""
    published = checkpoints.resolve(name, version or None)
    if "model.safetensors" not in published.manifest.files:
        raise FailedPreconditionError(
            f"{published.ref} holds no model (architecture {published.manifest.architecture!r}); "
            "it may be a projection's table checkpoint", field="checkpoint")
    with tempfile.TemporaryDirectory(prefix="crossadapt-model-", dir=cache_dir) as tmp:
        folder = Path(tmp) / "ckpt"
        fetch_checkpoint(checkpoints, published.name, published.version, folder)
        try:
            loaded = load_checkpoint(folder)
        except CheckpointError as exc:
            raise DataLossError(f"{published.ref}: {exc}", field="checkpoint") from exc
    return loaded.model, published


def load_vocabulary(checkpoints: CheckpointStore, published: PublishedCheckpoint) -> Vocabulary | None:
    """The checkpoint's vocabulary, or None if it was published without one."""
    files = [f.removeprefix(f"{VOCAB_DIR}/") for f in published.manifest.files if f.startswith(f"{VOCAB_DIR}/")]
    if not files:
        return None
    return _read_vocabulary(files, lambda name: checkpoints.read_file(published, f"{VOCAB_DIR}/{name}"),
                            published.ref)


def _read_vocabulary(files: list[str], read: Callable[[str], bytes], where: str) -> Vocabulary:
    """A saved vocabulary's `files` (names inside its folder), each read by `read`; DATA_LOSS if unreadable."""
    with tempfile.TemporaryDirectory(prefix="crossadapt-vocab-") as tmp:
        for name in files:
            target = Path(tmp) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(read(name))
        try:
            return Vocabulary.load(Path(tmp))
        except (ValueError, OSError, KeyError) as exc:
            raise DataLossError(f"{where}: unreadable vocabulary: {exc}", field=VOCAB_DIR) from exc


# ---- datasets -----------------------------------------------------------------------------------
def split_table(arrays: SplitArrays, spec: FeatureSpec, vocab_hash: str = "", vocab_version: int | None = None,
                ) -> pa.Table:
    """A split as an Arrow table with named columns and the spec (and vocabulary hash and version) in the
    schema metadata."""
    if arrays.categorical.shape[1] != len(spec.categorical) or arrays.numerical.shape[1] != len(spec.numerical):
        raise InvalidArgumentError(
            f"split has {arrays.categorical.shape[1]} categorical / {arrays.numerical.shape[1]} numerical columns, "
            f"the spec {len(spec.categorical)} / {len(spec.numerical)}", field="feature_spec")
    fields = {f.name for f in spec.categorical} | set(spec.numerical)
    reserved = fields & ({"label"} | {name for name in OPTIONAL_COLUMNS if getattr(arrays, name) is not None})
    if reserved:
        raise InvalidArgumentError(f"feature field(s) {sorted(reserved)} collide with the split's own columns of "
                                   "that name; rename the field", field=sorted(reserved)[0])
    columns: dict[str, Any] = {}
    for index, field in enumerate(spec.categorical):
        columns[field.name] = pa.array(np.ascontiguousarray(arrays.categorical[:, index], dtype=np.int32))
    for index, name in enumerate(spec.numerical):
        columns[name] = pa.array(np.ascontiguousarray(arrays.numerical[:, index], dtype=np.float32))
    columns["label"] = pa.array(np.asarray(arrays.label, dtype=np.float32))
    for name in OPTIONAL_COLUMNS:
        value = getattr(arrays, name)
        if value is not None:
            columns[name] = pa.array(np.asarray(value))
    metadata = {SPEC_METADATA_KEY: spec.model_dump_json().encode(), VOCAB_HASH_METADATA_KEY: vocab_hash.encode()}
    if vocab_version is not None:
        metadata[VOCAB_VERSION_METADATA_KEY] = str(int(vocab_version)).encode()
    return pa.table(columns).replace_schema_metadata(metadata)


def table_arrays(table: pa.Table | pa.RecordBatch, spec: FeatureSpec) -> SplitArrays:
    """Arrow columns back to a split; INVALID_ARGUMENT naming the first missing or mistyped column."""
    names = set(table.schema.names)
    wanted = [f.name for f in spec.categorical] + list(spec.numerical) + ["label"]
    missing = [name for name in wanted if name not in names]
    if missing:
        raise InvalidArgumentError(f"columns {missing} are missing (the data has {sorted(names)})", field=missing[0])

    def column(name: str, dtype: type) -> np.ndarray:
        try:
            return table.column(name).to_numpy(zero_copy_only=False).astype(dtype, copy=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError, TypeError) as exc:
            raise InvalidArgumentError(f"column {name!r} is not {dtype.__name__}: {exc}", field=name) from exc

    rows = table.num_rows
    categorical = (np.stack([column(f.name, np.int64) for f in spec.categorical], axis=1)
                   if spec.categorical else np.zeros((rows, 0), np.int64))
    numerical = (np.stack([column(n, np.float32) for n in spec.numerical], axis=1)
                 if spec.numerical else np.zeros((rows, 0), np.float32))
    fields = {f.name for f in spec.categorical} | set(spec.numerical)
    optional = {name: column(name, np.int64 if name in ("timestamp", "user") else np.float32)
                for name in OPTIONAL_COLUMNS if name in names and name not in fields}
    return SplitArrays(categorical=categorical, numerical=numerical, label=column("label", np.float32), **optional)


def write_split(datasets: DatasetStore, name: str, arrays: SplitArrays, spec: FeatureSpec, *,  # noqa: PLR0913
                vocab_hash: str = "", partitions: int = 1, start: datetime = _EPOCH,
                partition_span: timedelta = timedelta(hours=1), vocab_version: int | None = None,
                vocabulary: Vocabulary | None = None) -> list[str]:
    """Store a split as `partitions` consecutive time partitions (rows stay in order); returns their ids.

    `vocab_version`: the version of a growing vocabulary the ids are of (recorded beside its hash).
    `vocabulary`: that version's values, stored beside the partitions (`dataset_vocabulary` reads them);
    its hash and version must be the ones given (they default to its own)."""
    if partitions < 1:
        raise InvalidArgumentError(f"partitions must be >= 1, got {partitions}", field="partitions")
    if vocabulary is not None:
        vocab_hash = vocab_hash or vocabulary.hash
        vocab_version = vocabulary.version if vocab_version is None else vocab_version
        if (vocabulary.hash, vocabulary.version) != (vocab_hash, vocab_version):
            raise InvalidArgumentError(
                f"vocabulary version {vocabulary.version} ({vocabulary.hash[:12]}…) is not the split's version "
                f"{vocab_version} ({vocab_hash[:12]}…)", field="vocabulary")
        write_dataset_vocabulary(datasets, name, vocabulary)
    table = split_table(arrays, spec, vocab_hash, vocab_version)
    edges = np.linspace(0, len(arrays), min(partitions, max(len(arrays), 1)) + 1).round().astype(np.int64)
    written = []
    for index, (lo, hi) in enumerate(zip(edges[:-1], edges[1:], strict=True)):
        written.append(datasets.write_partition(name, start + index * partition_span,
                                                table.slice(int(lo), int(hi - lo))))
    return written


def _dataset_vocab_key(datasets: DatasetStore, name: str, version: int | None = None) -> str:
    folder = f"{datasets.prefix}/{check_name(name)}/{DATASET_VOCAB_DIR}"
    return folder if version is None else f"{folder}/v{version:06d}"


def write_dataset_vocabulary(datasets: DatasetStore, name: str, vocabulary: Vocabulary) -> None:
    """Store `vocabulary` (values and history) as its version of the dataset's vocabulary; a version stored
    already is kept (versions are immutable: same number, same values). Its index goes up last, so a reader
    that finds the index finds every field file."""
    folder = _dataset_vocab_key(datasets, name, vocabulary.version)
    index = f"{folder}/{VOCAB_INDEX}"
    if datasets.objects.exists(index):
        return
    with tempfile.TemporaryDirectory(prefix="crossadapt-vocab-") as tmp:
        vocabulary.save(Path(tmp))
        files = sorted(p.name for p in Path(tmp).iterdir() if p.is_file() and p.name != VOCAB_INDEX)
        for file in [*files, VOCAB_INDEX]:
            datasets.objects.put_file(f"{folder}/{file}", Path(tmp) / file)


def dataset_vocabulary(datasets: DatasetStore, name: str, vocab_hash: str, version: int | None = None,
                       ) -> Vocabulary | None:
    """The version of the dataset's stored vocabulary whose hash is `vocab_hash` (the one its ids of that
    hash are of), from the version `version` if stored, else any newer stored version that holds it as a
    prefix; None if none does (the split was written without its vocabulary)."""
    stored = sorted(int(child[1:]) for child in datasets.objects.list_children(_dataset_vocab_key(datasets, name))
                    if _VOCAB_VERSION_DIR.match(child))
    candidates = [v for v in stored if v == version] + [v for v in reversed(stored) if version is None or v > version]
    for number in candidates:
        folder = _dataset_vocab_key(datasets, name, number)
        if not datasets.objects.exists(f"{folder}/{VOCAB_INDEX}"):
            continue  # still being written
        files = [key.rsplit("/", 1)[-1] for key in datasets.objects.list_keys(folder)]
        vocabulary = _read_vocabulary(files, lambda file, folder=folder: datasets.objects.get_bytes(f"{folder}/{file}"),
                                      f"dataset {name!r} vocabulary v{number}")
        if vocabulary.version_of(vocab_hash) is not None:
            return vocabulary.resolve(vocab_hash)
    return None


def dataset_feature_spec(datasets: DatasetStore, name: str) -> tuple[FeatureSpec, str]:
    """The feature spec and vocabulary hash recorded in the dataset's first partition (its footer only)."""
    first = datasets.first_schema(name)
    if first is None:
        raise FailedPreconditionError(f"dataset {name!r} has no rows", field="dataset")
    return schema_spec(first[0], name)


def _batch_spec(batch: pa.RecordBatch, where: str) -> tuple[FeatureSpec, str]:
    return schema_spec(batch.schema, where)


def schema_spec(schema: pa.Schema, where: str) -> tuple[FeatureSpec, str]:
    """The feature spec and vocabulary hash a partition's schema metadata records (written by write_split)."""
    metadata = schema.metadata or {}
    if SPEC_METADATA_KEY not in metadata:
        raise InvalidArgumentError(f"{where}: partition carries no feature spec (not written by write_split)",
                                   field="dataset")
    try:
        spec = FeatureSpec.model_validate(json.loads(metadata[SPEC_METADATA_KEY]))
    except ValueError as exc:
        raise DataLossError(f"{where}: unreadable feature spec in the Parquet metadata: {exc}", field="dataset") from exc
    return spec, metadata.get(VOCAB_HASH_METADATA_KEY, b"").decode()


def schema_vocab_version(schema: pa.Schema) -> int | None:
    """The vocabulary version a partition's schema metadata records (write_split's `vocab_version`), if any."""
    raw = (schema.metadata or {}).get(VOCAB_VERSION_METADATA_KEY)
    try:
        return int(raw) if raw else None
    except ValueError:
        return None


def read_split(datasets: DatasetStore, name: str, start: DatasetPosition | None = None, *,
               batch_rows: int = 65_536, spec: FeatureSpec | None = None,
               ) -> Iterator[tuple[SplitArrays, DatasetPosition]]:
    """Batches of a dataset in time order from `start`, each with the position just after it.

    With `spec`, a partition whose recorded spec differs is refused (INVALID_ARGUMENT naming it).
    """
    for batch, position in datasets.read(name, start, batch_rows=batch_rows):
        if spec is not None:
            _checked_spec(batch, spec, name, position.partition)
        yield table_arrays(batch, spec or _batch_spec(batch, name)[0]), position


def read_all(datasets: DatasetStore, name: str, spec: FeatureSpec | None = None) -> SplitArrays:
    """The whole dataset as one split (small datasets: samples, validation splits)."""
    parts = [arrays for arrays, _ in read_split(datasets, name, spec=spec, batch_rows=1 << 20)]
    if not parts:
        raise FailedPreconditionError(f"dataset {name!r} has no rows", field="dataset")
    return SplitArrays.concat(parts)


def read_recent(datasets: DatasetStore, name: str, spec: FeatureSpec, need: int,
                count: Callable[[SplitArrays], int] = len) -> SplitArrays:
    """The newest partitions of a dataset, in time order, that together hold at least `need` rows
    (`count` says how many of a partition's rows a caller uses: a pCVR slice counts clicked rows only).

    Partitions are read from the last one back, so a long split costs only its tail; its last `need`
    counted rows are those of `read_all`. Fewer in the whole dataset: all of it.
    """
    parts: list[SplitArrays] = []
    found = 0
    for partition in reversed(datasets.partitions(name)):
        if found >= need:
            break
        batches = [table_arrays(batch, _checked_spec(batch, spec, name, partition))
                   for batch, _ in datasets.read_partition(name, partition, batch_rows=1 << 20)]
        if batches:
            part = SplitArrays.concat(batches)
            parts.insert(0, part)
            found += count(part)
    if not parts:
        raise FailedPreconditionError(f"dataset {name!r} has no rows", field="dataset")
    return SplitArrays.concat(parts)


def _checked_spec(batch: pa.RecordBatch, spec: FeatureSpec, name: str, partition: str | None) -> FeatureSpec:
    found, _ = _batch_spec(batch, f"{name}/{partition}")
    if found != spec:
        raise InvalidArgumentError(
            f"partition {name}/{partition} has schema {_describe(found)}, expected {_describe(spec)}",
            field="dataset")
    return spec


def _describe(spec: FeatureSpec) -> str:
    return (f"{len(spec.categorical)} categorical ({', '.join(f.name for f in spec.categorical[:4])}"
            f"{'…' if len(spec.categorical) > 4 else ''}) + {len(spec.numerical)} numerical")
