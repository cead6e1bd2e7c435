"""Streaming preparation: files of any size in bounded memory, with the in-memory path's exact output.

Two passes. Pass 1 reads the source once (:mod:`crossadapt.data.stream_source`), encodes each chunk
with per-field dictionaries and spills it (:mod:`crossadapt.data.spill`); the per-chunk value counts are
merged over the rows that end up in hist + train, known once every row has been read, and the
frequency threshold is applied at the end. Pass 2 reads the spilled chunks back block by block in time
order (:mod:`crossadapt.data.time_merge`), maps provisional codes to vocabulary ids and writes each
split's ``.npy`` files sequentially. Peak memory: one chunk, one block and the distinct values
(dictionaries), never the rows; the spill (about 5 bytes per value) lives in the dataset's temporary
folder and is gone when the dataset is published.

The same engine appends a stream partition to a dataset (:func:`append_streaming`), optionally growing
the vocabulary (:mod:`crossadapt.data.growth`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from crossadapt.data.arrays import OPTIONAL_COLUMNS
from crossadapt.data.atomic import build_atomically, check_target
from crossadapt.data.encode import interleave
from crossadapt.data.growth import GrowthConfig, Pending, field_growth, load_pending, save_pending
from crossadapt.data.missing import choose_indicator_fields, numerical_feature_names
from crossadapt.data.prepared import DatasetManifest, PreparedDataset, SplitStats
from crossadapt.data.progress import NoProgress, Progress
from crossadapt.data.schema import DatasetSchema, PrepareConfig
from crossadapt.data.spill import SpilledRows, SpillWriter
from crossadapt.data.stream_source import StreamingSource
from crossadapt.data.time_merge import DEFAULT_BLOCK_ROWS, Block, plan_blocks, prefix_rows
from crossadapt.data.vocabulary import Vocabulary, build_field_from_counts
from crossadapt.models.spec import CategoricalField, FeatureSpec

SPILL_FOLDER = ".spill"


@dataclass
class VocabularyPlan:
    """The vocabulary to write and, per field, the map from provisional codes to its ids."""

    vocabulary: Vocabulary
    maps: list[np.ndarray]  # [C] of [R_f] int32
    reused: list[str] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)
    pending: Pending | None = None


# ------------------------------------------------------------------------------------------- pass 1


def spill_tables(tables: Iterable[pa.Table], folder: Path, schema: DatasetSchema, config: PrepareConfig,
                 progress: Progress, *, total_bytes: int | None = None, done_bytes=None) -> SpilledRows:  # fmt: skip
    """Pass 1 over ``tables`` (validated chunks); ``done_bytes()`` reports reading progress in bytes."""
    writer = SpillWriter(folder, schema, config)
    rows = 0
    with progress.stage("reading", total_bytes=total_bytes) as update:
        for table in tables:
            rows += writer.add(table)
            update(rows=rows, done_bytes=done_bytes() if done_bytes else None)
    return writer.finish()


def count_values(spilled: SpilledRows, index: int, prefix: np.ndarray) -> np.ndarray:
    """``[R]`` occurrences of each provisional code of field ``index`` in the first ``prefix[j]`` rows of chunk j."""
    counts = np.zeros(len(spilled.dictionaries[index]), dtype=np.int64)
    for chunk, rows in enumerate(prefix.tolist()):
        if rows:
            counts += np.bincount(spilled.read(chunk, "categorical", 0, rows, index), minlength=len(counts))
    return counts


def build_vocabulary(spilled: SpilledRows, config: PrepareConfig, reuse: Vocabulary | None, prefix: np.ndarray) -> VocabularyPlan:
    """As :func:`crossadapt.data.encode.encode_rows`: reused fields keep ``reuse``'s ids; the others
    count the hist + train rows (``prefix``) and keep values seen ``min_count`` times."""
    fields = spilled.schema.categorical
    reused = [f for f in fields if reuse is not None and f in reuse]
    values, counts, maps = {}, {}, []
    for index, name in enumerate(fields):
        distinct = spilled.dictionaries[index].values
        if name in reused:
            maps.append(reuse.id_map(name, distinct))
            values[name], counts[name] = reuse.values(name), reuse.counts(name)
            continue
        kept, kept_counts, id_map = build_field_from_counts(distinct, count_values(spilled, index, prefix), config.min_count_for(name))
        maps.append(id_map)
        values[name], counts[name] = kept, kept_counts
    if reuse is not None and reuse.fields == list(fields):
        vocabulary = reuse  # every field reused: the same vocabulary, version and history included
    else:
        vocabulary = Vocabulary(values, counts, check=False)
    return VocabularyPlan(vocabulary, maps, reused)


# ------------------------------------------------------------------------------------------- pass 2


class NpyWriter:
    """A ``.npy`` file of known shape written front to back (never memory-mapped)."""

    def __init__(self, path: Path, dtype: type, shape: tuple[int, ...]):
        self.path, self.dtype, self.shape = path, np.dtype(dtype), shape
        self.rows = 0
        self._file = open(path, "wb")
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(self._file, header)

    def write(self, array: np.ndarray) -> None:
        np.ascontiguousarray(array, dtype=self.dtype).tofile(self._file)
        self.rows += len(array)

    def close(self) -> None:
        self._file.close()
        if self.rows != self.shape[0]:
            raise RuntimeError(f"{self.path}: wrote {self.rows} rows, expected {self.shape[0]}")


class SplitWriter:
    """One split's files, written block by block, and its statistics."""

    def __init__(self, folder: Path, rows: int, widths: dict[str, int], columns: list[str]):
        folder.mkdir(parents=True, exist_ok=True)
        dtypes = {"categorical": np.int32, "numerical": np.float32, "label": np.float32, "conversion": np.float32,
                  "timestamp": np.int64, "user": np.int64, "prob": np.float32}  # fmt: skip
        self.writers = {
            c: NpyWriter(folder / f"{c}.npy", dtypes[c], (rows, widths[c]) if c in widths else (rows,)) for c in columns
        }
        self.rows, self.clicks, self.conversions = rows, 0.0, 0.0
        self.first_time: int | None = None
        self.last_time: int | None = None

    def write(self, arrays: dict[str, np.ndarray]) -> None:
        for name, writer in self.writers.items():
            writer.write(arrays[name])
        self.clicks += float(arrays["label"].sum(dtype=np.float64))
        if "conversion" in arrays:
            self.conversions += float(arrays["conversion"].sum(dtype=np.float64))
        if "timestamp" in arrays and len(arrays["timestamp"]):
            if self.first_time is None:
                self.first_time = int(arrays["timestamp"][0])
            self.last_time = int(arrays["timestamp"][-1])

    def close(self) -> SplitStats:
        for writer in self.writers.values():
            writer.close()
        rows, clicks = self.rows, self.clicks
        return SplitStats(
            rows=rows,
            click_rate=clicks / rows if rows else 0.0,
            conversion_rate=None if "conversion" not in self.writers or not clicks else self.conversions / clicks,
            time_range=None if self.first_time is None else (self.first_time, self.last_time),
        )


def read_block(spilled: SpilledRows, block: Block, maps: list[np.ndarray], indicators: list[int]) -> dict[str, np.ndarray]:
    """A block's rows as the split files store them: ids, values then indicators, optional columns."""
    schema = spilled.schema

    def gather(column: str, index: int = 0, transform=None) -> np.ndarray:
        parts = [spilled.read(chunk, column, start, stop, index) for chunk, start, stop in block.slices]
        if transform is not None:
            parts = [transform(p) for p in parts]
        return np.concatenate(parts) if len(parts) != 1 else parts[0]

    rows = block.rows
    categorical = [gather("categorical", f, maps[f].take) for f in range(len(schema.categorical))]
    numerical = [gather("numerical", j) for j in range(len(schema.numerical))]
    numerical += [gather("missing", j).astype(np.float32) for j in indicators]
    out = {"label": gather("label")}
    for name in spilled.columns:
        out[name] = gather("user_text" if name == "user" and spilled.user_as_integers else name)
    if block.merge:
        order = np.argsort(out["timestamp"], kind="stable")
        categorical = [c[order] for c in categorical]
        numerical = [c[order] for c in numerical]
        out = {name: column[order] for name, column in out.items()}
    out["categorical"] = interleave(categorical, rows, np.int32)
    out["numerical"] = interleave(numerical, rows, np.float32)
    return out


def write_splits(
    spilled: SpilledRows,
    blocks: list[Block],
    maps: list[np.ndarray],
    indicator_fields: list[str],
    folders: dict[str, Path],
    progress: Progress,
) -> dict[str, SplitStats]:
    """Pass 2: every block in order into its split's files; returns the splits' statistics."""
    schema = spilled.schema
    indicators = [schema.numerical.index(f) for f in indicator_fields]
    columns = ["categorical", "numerical", "label"] + [c for c in OPTIONAL_COLUMNS if c in spilled.columns]
    widths = {"categorical": len(schema.categorical), "numerical": len(schema.numerical) + len(indicators)}
    sizes: dict[str, int] = {}
    for block in blocks:
        sizes[block.split] = sizes.get(block.split, 0) + block.rows
    writers = {name: SplitWriter(folders[name], rows, widths, columns) for name, rows in sizes.items()}
    done = 0
    with progress.stage("writing", total_rows=spilled.rows) as update:
        for block in blocks:
            if block.rows:
                writers[block.split].write(read_block(spilled, block, maps, indicators))
                done += block.rows
                update(rows=done)
    return {name: writer.close() for name, writer in writers.items()}


def present_columns(spilled: SpilledRows) -> list[str]:
    return ["categorical", "numerical", "label"] + [c for c in OPTIONAL_COLUMNS if c in spilled.columns]


# ------------------------------------------------------------------------------------------- entry points


def prepare_streaming(
    source: StreamingSource,
    out: Path,
    *,
    config: PrepareConfig,
    vocabulary: Vocabulary | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> PreparedDataset:
    """Prepare the dataset at ``out`` from a streaming source (same layout and ids as ``prepare_dataset``)."""
    started, progress = time.perf_counter(), progress or NoProgress()
    check_target(out, overwrite)
    schema = source.schema

    def build(folder: Path) -> None:
        spilled = spill_tables(source, folder / SPILL_FOLDER, schema, config, progress,
                               total_bytes=source.total_bytes, done_bytes=lambda: source.bytes_done)  # fmt: skip
        bounds = config.split_bounds(spilled.rows)
        blocks = plan_blocks(spilled, [(name, stop - start) for name, (start, stop) in bounds.items()], block_rows)
        fit_rows = bounds["train"][1]  # hist + train: the only rows a model may learn the vocabulary from
        plan = build_vocabulary(spilled, config, vocabulary, prefix_rows(blocks, len(spilled.chunks), fit_rows))
        indicators = choose_indicator_fields(schema, spilled.missing_counts, config.indicator_mode(source.format))
        folders = {name: folder / "splits" / name for name in bounds}
        stats = write_splits(spilled, blocks, plan.maps, indicators, folders, progress)
        shutil.rmtree(folder / SPILL_FOLDER)
        spec = FeatureSpec(
            categorical=tuple(CategoricalField(name=f, vocab_size=plan.vocabulary.size(f)) for f in schema.categorical),
            numerical=numerical_feature_names(schema, indicators),
        )
        plan.vocabulary.save(folder / "vocab")
        manifest = DatasetManifest(
            schema=schema, feature_spec=spec, splits={name: stats[name].rows for name in bounds},
            split_stats={name: stats[name] for name in bounds}, columns=present_columns(spilled),
            preprocessing=config, vocab_hash=plan.vocabulary.hash, vocab_reused_fields=plan.reused,
            vocab_version=plan.vocabulary.version, missing_indicator_fields=indicators, source=source.info,
        )  # fmt: skip
        manifest.prepare_seconds = round(time.perf_counter() - started, 3)
        manifest.write(folder)  # last: a folder with a manifest is complete

    build_atomically(out, build, overwrite)
    return PreparedDataset.open(out)


def growth_plan(spilled: SpilledRows, vocabulary: Vocabulary, growth: GrowthConfig | None, pending: Pending) -> VocabularyPlan:
    """Maps for an appended partition: known values keep their ids; with ``growth``, new values that
    reach their threshold (counting pending sightings) are appended to the vocabulary."""
    fields = spilled.schema.categorical
    growing = growth.growing_fields(fields) if growth is not None else []
    additions, new_pending, added = {}, dict(pending), {}
    everything = np.array([c.rows for c in spilled.chunks], dtype=np.int64)
    for index, name in enumerate(fields):
        if name not in growing:
            continue
        distinct = spilled.dictionaries[index].values
        values, counts, left = field_growth(vocabulary, name, distinct, count_values(spilled, index, everything), pending, growth)
        new_pending[name] = left
        if len(values):
            additions[name] = (values, counts)
            added[name] = len(values)
    grown = vocabulary.grow(additions) if additions else vocabulary
    maps = [grown.id_map(name, spilled.dictionaries[index].values) for index, name in enumerate(fields)]
    return VocabularyPlan(grown, maps, added=added, pending=new_pending if growth is not None else None)


def append_streaming(
    dataset: PreparedDataset,
    name: str,
    tables: Iterable[pa.Table],
    *,
    growth: GrowthConfig | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    total_bytes: int | None = None,
    done_bytes=None,
    block_rows: int = DEFAULT_BLOCK_ROWS,
) -> VocabularyPlan:
    """Encode ``tables`` (validated chunks of one partition, the dataset's schema) as split ``name``.

    Without ``growth`` unknown values are ``<UNK>``; with it the vocabulary may grow (a new version),
    and the manifest then names the new version and the grown field sizes. Returns the plan used.
    """
    progress = progress or NoProgress()
    manifest, schema = dataset.manifest, dataset.schema
    result: dict[str, VocabularyPlan] = {}

    def build(folder: Path) -> None:
        spilled = spill_tables(tables, folder / SPILL_FOLDER, schema, manifest.preprocessing, progress,
                               total_bytes=total_bytes, done_bytes=done_bytes)  # fmt: skip
        columns = present_columns(spilled)
        if columns != manifest.columns:
            raise ValueError(f"the partition has columns {columns}, the dataset {manifest.columns}")
        blocks = plan_blocks(spilled, [(name, spilled.rows)], block_rows)
        pending = load_pending(dataset.path / "vocab", dataset.vocabulary) if growth is not None else {}
        plan = growth_plan(spilled, dataset.vocabulary, growth, pending)
        stats = write_splits(spilled, blocks, plan.maps, manifest.missing_indicator_fields, {name: folder}, progress)
        shutil.rmtree(folder / SPILL_FOLDER)
        result["plan"], result["stats"] = plan, stats[name]

    build_atomically(dataset.path / "splits" / name, build, overwrite)
    plan = result["plan"]
    if plan.pending is not None:  # the vocabulary folder is replaced as a whole: never half-grown

        def save(folder: Path) -> None:
            plan.vocabulary.save(folder)
            save_pending(folder, plan.vocabulary, plan.pending)

        build_atomically(dataset.path / "vocab", save, overwrite=True)
    updated = manifest.model_copy(deep=True)
    updated.splits[name] = result["stats"].rows
    updated.split_stats[name] = result["stats"]
    updated.split_vocab_versions[name] = plan.vocabulary.version
    if plan.added:
        updated.feature_spec = FeatureSpec(
            categorical=tuple(CategoricalField(name=f.name, vocab_size=plan.vocabulary.size(f.name))
                              for f in manifest.feature_spec.categorical),
            numerical=manifest.feature_spec.numerical,
        )  # fmt: skip
        updated.vocab_hash, updated.vocab_version = plan.vocabulary.hash, plan.vocabulary.version
    updated.write(dataset.path)
    return plan

