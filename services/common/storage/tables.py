"""On-store layout of an embedding-table checkpoint: each table split into row shards.

    checkpoints/<name>/v000001/
      manifest.json                              # core CheckpointManifest; extra["tables"] = layout below
      tables/<field>/shard-00000.safetensors     # tensor "embedding": rows [start, start+rows) of the table, [n, D] f32
      tables/<field>/shard-00001.safetensors
      ...

    extra["tables"] = {"user_id": {"rows": 1000000, "dim": 16, "dtype": "float32",
                                   "shards": [{"file": "tables/user_id/shard-00000.safetensors", "start": 0,
                                               "rows": 125000}, ...]}}

Row i of every shard is row `start + i` of the table, i.e. the same feature value in teacher and
student (the student inherits the vocabulary). A 1M-row table in 8 shards has 125,000-row shards;
projection maps one Celery task over each shard.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from safetensors.numpy import save_file as save_safetensors_file

from crossadapt.checkpoint import CheckpointManifest
from crossadapt.models.spec import CategoricalField, FeatureSpec
from services.common.errors import DataLossError, InvalidArgumentError
from services.common.storage.checkpoints import CheckpointStore, PublishedCheckpoint

TABLE_TENSOR = "embedding"
TABLES_ARCHITECTURE = "embedding-tables"
NUMERICAL_TABLE = "__numerical__"
_FIELD = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class ShardEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str
    start: int = Field(ge=0)
    rows: int = Field(ge=1)
    # A shard that is a row range inside a larger file rather than a file of its own: a published model's
    # tables are its model.safetensors' bytes, stored once. `offset` is the range's first byte (rows are
    # little-endian float32, row-major) and `sha256` the range's digest, so a reader verifies what it reads.
    offset: int | None = Field(None, ge=0)
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _range_needs_its_digest(self) -> ShardEntry:
        if (self.offset is None) != (self.sha256 is None):
            raise ValueError("a shard inside a file needs both offset and sha256")
        return self


class TableLayout(BaseModel):
    """One table [rows, dim] as contiguous row shards, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rows: int = Field(ge=1)
    dim: int = Field(ge=1)
    dtype: Literal["float32"] = "float32"
    shards: tuple[ShardEntry, ...] = Field(min_length=1)


def check_field(field: str) -> str:
    if not _FIELD.match(field):
        raise InvalidArgumentError(f"invalid table name {field!r}", field="fields")
    return field


def shard_path(field: str, index: int) -> str:
    return f"tables/{check_field(field)}/shard-{index:05d}.safetensors"


def shard_bounds(rows: int, num_shards: int) -> list[tuple[int, int]]:
    """[start, stop) of `num_shards` near-equal row ranges (at most `rows` shards)."""
    if num_shards < 1:
        raise InvalidArgumentError(f"num_shards must be >= 1, got {num_shards}", field="num_shards")
    edges = np.linspace(0, rows, min(num_shards, rows) + 1).round().astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def table_layouts(manifest: CheckpointManifest, where: str) -> dict[str, TableLayout]:
    """The sharded tables a manifest declares; InvalidArgumentError if it has none."""
    raw = manifest.extra.get("tables")
    if not raw:
        raise InvalidArgumentError(
            f"{where} has no sharded embedding tables (extra.tables); upload it with upload_table_checkpoint",
            field="teacher",
        )
    try:
        layouts = {str(k): TableLayout.model_validate(v) for k, v in dict(raw).items()}
    except (ValidationError, TypeError, ValueError) as exc:
        raise DataLossError(f"{where}: malformed extra.tables in the manifest: {exc}", field="manifest.json") from exc
    for field, layout in layouts.items():
        covered = 0
        for shard in layout.shards:
            if shard.start != covered or shard.file not in manifest.files:
                raise DataLossError(f"{where}: table {field!r} shard {shard.file} is not contiguous or not listed",
                                    field=shard.file)
            if shard.offset is not None and (shard.offset + shard.rows * layout.dim * 4
                                             > manifest.files[shard.file].size):
                raise DataLossError(f"{where}: table {field!r} rows [{shard.start}, {shard.start + shard.rows}) lie "
                                    f"beyond {shard.file}", field=shard.file)
            covered += shard.rows
        if covered != layout.rows:
            raise DataLossError(f"{where}: table {field!r} shards cover {covered} of {layout.rows} rows", field=field)
    return layouts


def encode_shard(rows: np.ndarray) -> bytes:
    """rows [n, D] float32 → safetensors bytes."""
    return save_safetensors({TABLE_TENSOR: np.ascontiguousarray(rows, dtype=np.float32)})


def decode_shard(data: bytes, shard: ShardEntry, dim: int) -> np.ndarray:
    """safetensors bytes → rows [shard.rows, dim] float32; DataLossError if the tensor is not that."""
    try:
        array = load_safetensors(data)[TABLE_TENSOR]
    except Exception as exc:  # noqa: BLE001 - safetensors raises several types for bad bytes
        raise DataLossError(f"{shard.file}: not a readable safetensors shard ({exc})", field=shard.file) from exc
    if array.shape != (shard.rows, dim) or array.dtype != np.float32:
        raise DataLossError(
            f"{shard.file}: tensor {array.dtype}{list(array.shape)}, layout says float32[{shard.rows}, {dim}]",
            field=shard.file,
        )
    return array


def read_shard(store: CheckpointStore, checkpoint: PublishedCheckpoint, shard: ShardEntry, dim: int) -> np.ndarray:
    """One shard's rows [shard.rows, dim] float32 (read-only), a shard file or a row range, verified either way."""
    if shard.offset is None:
        return decode_shard(store.read_file(checkpoint, shard.file), shard, dim)
    data = store.read_range(checkpoint, shard.file, shard.offset, shard.rows * dim * 4, shard.sha256 or "")
    return np.frombuffer(data, dtype="<f4").reshape(shard.rows, dim)


def _default_spec(tables: Mapping[str, np.ndarray]) -> FeatureSpec:
    categorical = tuple(CategoricalField(name=f, vocab_size=len(t)) for f, t in tables.items() if f != NUMERICAL_TABLE)
    numerical = tuple(f"numerical_{i}" for i in range(len(tables[NUMERICAL_TABLE]))) if NUMERICAL_TABLE in tables else ()
    return FeatureSpec(categorical=categorical, numerical=numerical)


def upload_table_checkpoint(  # noqa: PLR0913 - manifest fields
    store: CheckpointStore,
    name: str,
    tables: Mapping[str, np.ndarray],
    *,
    num_shards: int = 8,
    feature_spec: FeatureSpec | None = None,
    vocab_hash: str = "",
    architecture: str = TABLES_ARCHITECTURE,
    config: Mapping[str, Any] | None = None,
    parent: str | None = None,
) -> PublishedCheckpoint:
    """Publish tables ({field: [V, D] array}) as the next version of `name`, each in `num_shards` row shards."""
    if not tables:
        raise InvalidArgumentError("no tables to upload", field="tables")
    spec = feature_spec or _default_spec(tables)
    vocab = {f.name: f.vocab_size for f in spec.categorical}
    layouts: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="crossadapt-tables-") as tmp:
        for field, table in tables.items():
            if table.ndim != 2 or len(table) == 0:
                raise InvalidArgumentError(f"table {field!r} must be [V, D] with V > 0, got {table.shape}", field=field)
            if field in vocab and vocab[field] != len(table):
                raise InvalidArgumentError(
                    f"table {field!r} has {len(table)} rows, the feature spec says {vocab[field]}", field=field
                )
            shards = []
            for index, (start, stop) in enumerate(shard_bounds(len(table), num_shards)):
                relpath = shard_path(field, index)
                (Path(tmp) / relpath).parent.mkdir(parents=True, exist_ok=True)
                rows = np.ascontiguousarray(table[start:stop], dtype=np.float32)
                save_safetensors_file({TABLE_TENSOR: rows}, str(Path(tmp) / relpath))
                shards.append(ShardEntry(file=relpath, start=start, rows=stop - start))
            layouts[field] = TableLayout(rows=len(table), dim=table.shape[1], shards=tuple(shards)).model_dump(mode="json")
        dims = sorted({int(t.shape[1]) for t in tables.values()})
        return store.publish_folder(
            name,
            Path(tmp),
            architecture=architecture,
            config=dict(config or {"embedding_dim": dims[0] if len(dims) == 1 else dims}),
            feature_spec=spec,
            vocab_hash=vocab_hash,
            parent=parent,
            extra={"tables": layouts},
        )


def read_table(store: CheckpointStore, checkpoint: PublishedCheckpoint, field: str) -> np.ndarray:
    """The whole table [rows, dim] float32, every shard verified against the manifest."""
    layouts = table_layouts(checkpoint.manifest, checkpoint.ref)
    if field not in layouts:
        raise InvalidArgumentError(f"{checkpoint.ref} has no table {field!r}; it has {sorted(layouts)}", field="field")
    layout = layouts[field]
    out = np.empty((layout.rows, layout.dim), dtype=np.float32)
    for shard in layout.shards:
        out[shard.start : shard.start + shard.rows] = read_shard(store, checkpoint, shard, layout.dim)
    return out


def export_model_tables(store: CheckpointStore, name: str, checkpoint_dir: Path, *, num_shards: int = 8) -> PublishedCheckpoint:
    """Publish a core model checkpoint folder's embedding tables (per field) in the sharded layout."""
    from crossadapt.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint_dir)
    embedding = loaded.model.embedding  # type: ignore[attr-defined]
    tables = {table: embedding.get_table(table).float().cpu().numpy() for table in embedding.table_names()}
    manifest = loaded.manifest
    return upload_table_checkpoint(
        store, name, tables, num_shards=num_shards, feature_spec=manifest.feature_spec, vocab_hash=manifest.vocab_hash,
        config={"embedding_dim": manifest.config.get("embedding_dim"), "source_architecture": manifest.architecture,
                "source_config": manifest.config},
        parent=str(checkpoint_dir),
    )
