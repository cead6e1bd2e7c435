"""A vocabulary that grows with the stream: new values get new ids once they pass a count threshold.

A value the vocabulary lacks is ``<UNK>`` until it has been seen ``min_count`` times (per field
configurable) in the data appended since the vocabulary was built; then it is appended to its field
(a new vocabulary version, :meth:`Vocabulary.grow`) and every row of the partition that carries it is
encoded with its new id. The partition is the unit of arrival: the rows that brought a value over the
threshold get its id too. Values still below the threshold are kept as *pending* counts beside the
vocabulary (``vocab/pending/field_<k>.parquet``), so a value that arrives a few times a day is admitted
once its total passes; at most ``max_pending`` pending values per field are kept (the most frequent,
ties by value), which bounds that file on a stream with an endless long tail.

A model trained with an older version sees a grown split through :func:`ids_for_sizes` (new ids read as
``<UNK>``); a model table grows with :meth:`crossadapt.models.layers.embedding.FeatureEmbedding.grow`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from crossadapt.data.vocabulary import Vocabulary, VocabularyRef, build_field_from_counts

PENDING_FOLDER = "pending"


class GrowthConfig(BaseModel):
    """Which fields grow and how often a new value must be seen first."""

    model_config = ConfigDict(extra="forbid")

    min_count: int = Field(10, ge=1, description="Sightings (pending ones included) that earn a new value an id.")
    min_count_per_field: dict[str, int] = Field(default_factory=dict, description="Per-field overrides.")
    fields: list[str] | None = Field(None, description="Fields that grow; None: every categorical field.")
    max_pending: int = Field(1_000_000, ge=0, description="Pending (not yet admitted) values kept per field.")

    @field_validator("min_count_per_field")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"min_count_per_field values must be >= 1, got {bad}")
        return value

    def min_count_for(self, field: str) -> int:
        return self.min_count_per_field.get(field, self.min_count)

    def growing_fields(self, fields: list[str]) -> list[str]:
        """The growing fields among ``fields``; naming a field the data lacks is an error."""
        named = set(self.fields if self.fields is not None else fields) | set(self.min_count_per_field)
        unknown = sorted(named - set(fields))
        if unknown:
            raise ValueError(f"growth names field(s) {unknown} the vocabulary lacks; fields are {fields}")
        return [f for f in fields if self.fields is None or f in self.fields]


Pending = dict[str, tuple[pa.Array, np.ndarray]]


def field_growth(
    vocabulary: Vocabulary, field: str, values: pa.Array, counts: np.ndarray, pending: Pending, config: GrowthConfig
) -> tuple[pa.Array, np.ndarray, tuple[pa.Array, np.ndarray]]:
    """New values of one field: (admitted values in id order, their counts, the field's new pending).

    ``values`` [U] distinct values seen in the new data and ``counts`` [U] how often; values the
    vocabulary has are ignored. Admitted values are ordered most frequent first, ties by value.
    """
    known = vocabulary.id_map(field, values) > 0
    candidates = ~known & (np.asarray(counts) > 0)
    new_values = pc.cast(values, pa.string()).filter(pa.array(candidates))
    new_counts = np.asarray(counts, dtype=np.int64)[candidates]
    old_values, old_counts = pending.get(field, (pa.array([], pa.string()), np.zeros(0, np.int64)))
    if len(old_values):
        merged = pc.dictionary_encode(pa.concat_arrays([pc.cast(old_values, pa.string()), new_values]))
        slots = merged.indices.to_numpy(zero_copy_only=False)
        weights = np.concatenate([old_counts, new_counts]).astype(np.float64)
        new_values = merged.dictionary
        new_counts = np.rint(np.bincount(slots, weights=weights, minlength=len(new_values))).astype(np.int64)
    threshold = config.min_count_for(field)
    admitted, admitted_counts, _ = build_field_from_counts(new_values, new_counts, threshold)
    waiting = new_counts < threshold
    left_values, left_counts = new_values.filter(pa.array(waiting)), new_counts[waiting]
    if len(left_counts) > config.max_pending:
        order = pc.sort_indices(pa.table({"n": left_counts, "v": left_values}),
                                sort_keys=[("n", "descending"), ("v", "ascending")]).to_numpy()[: config.max_pending]  # fmt: skip
        left_values, left_counts = left_values.take(pa.array(order)), left_counts[order]
    return admitted, admitted_counts, (left_values, left_counts)


def ids_for_sizes(categorical: np.ndarray, sizes: list[int] | np.ndarray) -> np.ndarray:
    """``[n, C]`` ids as a model with tables of ``sizes`` rows per field reads them: newer ids -> ``<UNK>`` (0)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.where(categorical < sizes[None, :], categorical, 0).astype(categorical.dtype, copy=False)


def version_for_sizes(vocabulary: Vocabulary, sizes: dict[str, int]) -> VocabularyRef:
    """The version whose tables have exactly ``sizes`` rows per field: the one a model with those tables
    uses (a model grown during co-distillation names it in its checkpoint). No such version: an error."""
    for entry in reversed(vocabulary.history):
        if entry.sizes == dict(sizes):
            return VocabularyRef(version=entry.version, hash=entry.hash)
    raise ValueError(f"no version of this vocabulary has tables of {dict(sizes)} rows; versions: "
                     f"{[(v.version, v.sizes) for v in vocabulary.history]}")


def save_pending(vocab_folder: Path, vocabulary: Vocabulary, pending: Pending) -> None:
    """Pending counts beside a saved vocabulary: one (value, count) Parquet file per field that has any."""
    folder = Path(vocab_folder) / PENDING_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for i, field in enumerate(vocabulary.fields):
        values, counts = pending.get(field, (pa.array([], pa.string()), np.zeros(0, np.int64)))
        if len(values):
            table = pa.table({"value": pc.cast(values, pa.string()), "count": np.asarray(counts, np.int64)})
            pq.write_table(table, folder / f"field_{i:03d}.parquet")


def load_pending(vocab_folder: Path, vocabulary: Vocabulary) -> Pending:
    folder = Path(vocab_folder) / PENDING_FOLDER
    pending: Pending = {}
    for i, field in enumerate(vocabulary.fields):
        path = folder / f"field_{i:03d}.parquet"
        if path.exists():
            table = pq.read_table(path)
            pending[field] = (table.column("value").combine_chunks(), table.column("count").to_numpy())
    return pending
