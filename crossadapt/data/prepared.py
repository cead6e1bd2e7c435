"""A prepared dataset on disk and its manifest.

Layout (all arrays are ``.npy``, memory-mapped on open)::

    <dataset>/
      dataset.json                 DatasetManifest (written last: a folder without it is incomplete)
      vocab/index.json             fields in order, file names, sizes, vocabulary sha256
      vocab/field_000.parquet ...  per field: value (string), count (int64); row k is id k+1, 0 = <UNK>
      vocab/pending/field_000.parquet  values not yet admitted to a growing vocabulary, with counts
      splits/<split>/categorical.npy  [n, C] int32
      splits/<split>/numerical.npy    [n, N + M] float32: N numerical fields, then M missing indicators
      splits/<split>/label.npy        [n] float32
      splits/<split>/{conversion,timestamp,user,prob}.npy   when the source has them
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from crossadapt.data.arrays import OPTIONAL_COLUMNS, SplitArrays
from crossadapt.data.raw import SourceInfo
from crossadapt.data.schema import DatasetSchema, PrepareConfig
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models.spec import FeatureSpec

MANIFEST_NAME = "dataset.json"
FORMAT_VERSION = 1


class SplitStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: int
    click_rate: float = Field(description="Clicks per row.")
    conversion_rate: float | None = Field(None, description="Conversions per click (pCVR's base rate).")
    time_range: tuple[int, int] | None = Field(None, description="First and last timestamp.")


class DatasetManifest(BaseModel):
    """Everything needed to use (and rebuild) a prepared dataset."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    format_version: int = FORMAT_VERSION
    schema_: DatasetSchema = Field(alias="schema")
    feature_spec: FeatureSpec
    splits: dict[str, int] = Field(description="Rows per split, in time order.")
    split_stats: dict[str, SplitStats] = Field(default_factory=dict)
    columns: list[str] = Field(description="Per-row columns stored in every split.")
    preprocessing: PrepareConfig
    vocab_hash: str
    vocab_reused_fields: list[str] = Field(
        default_factory=list, description="Fields whose vocabulary came from another dataset."
    )
    vocab_version: int = Field(1, ge=1, description="Version of the vocabulary (it grows with appended splits).")
    split_vocab_versions: dict[str, int] = Field(
        default_factory=dict, description="Vocabulary version each split was encoded with (absent: 1)."
    )
    missing_indicator_fields: list[str] = Field(
        default_factory=list,
        description="Numerical fields with a missing indicator (numerical columns N.. in this order).",
    )
    source: SourceInfo
    created_at: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    prepare_seconds: float | None = None

    def write(self, folder: Path) -> None:
        """Atomically (temp file, then rename) write ``folder/dataset.json``."""
        partial = folder / f".{MANIFEST_NAME}.partial"
        partial.write_text(self.model_dump_json(by_alias=True, indent=2))
        os.replace(partial, folder / MANIFEST_NAME)


class PreparedDataset:
    """A prepared dataset folder; ``split(name)`` memory-maps one split."""

    def __init__(self, path: Path, manifest: DatasetManifest):
        self.path = path
        self.manifest = manifest

    @classmethod
    def open(cls, path: str | Path) -> "PreparedDataset":
        path = Path(path)
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.exists():
            raise FileNotFoundError(f"{path} is not a prepared dataset (no {MANIFEST_NAME}; incomplete or wrong path)")
        manifest = DatasetManifest.model_validate(json.loads(manifest_path.read_text()))
        if manifest.format_version != FORMAT_VERSION:
            raise ValueError(f"{path}: dataset format {manifest.format_version}, this code reads {FORMAT_VERSION}")
        return cls(path, manifest)

    @property
    def schema(self) -> DatasetSchema:
        return self.manifest.schema_

    @property
    def feature_spec(self) -> FeatureSpec:
        return self.manifest.feature_spec

    @property
    def vocab_hash(self) -> str:
        return self.manifest.vocab_hash

    @property
    def split_names(self) -> list[str]:
        return list(self.manifest.splits)

    @cached_property
    def vocabulary(self) -> Vocabulary:
        return Vocabulary.load(self.path)

    def split(self, name: str) -> SplitArrays:
        """The split's columns, memory-mapped copy-on-write (writes stay in this process)."""
        if name not in self.manifest.splits:
            raise KeyError(f"no split {name!r} in {self.path}; splits: {self.split_names}")
        folder = self.path / "splits" / name

        def load(column: str) -> np.ndarray:
            return np.load(folder / f"{column}.npy", mmap_mode="c")

        optional = {c: load(c) if c in self.manifest.columns else None for c in OPTIONAL_COLUMNS}
        arrays = SplitArrays(load("categorical"), load("numerical"), load("label"), **optional)
        if len(arrays) != self.manifest.splits[name]:
            raise ValueError(f"{folder}: {len(arrays)} rows on disk, manifest says {self.manifest.splits[name]}")
        return arrays

    def __repr__(self) -> str:
        return f"PreparedDataset({str(self.path)!r}, splits={self.manifest.splits})"
