"""Streaming preparation: files of any size in bounded memory, with the in-memory path's exact output.

Two passes over the rows. Pass 1 reads the source once (:mod:`crossadapt.data.stream_source`) and spills
each block as a run: per-field dictionary codes, transformed numbers, labels (:mod:`crossadapt.data.spill`).
Then, field by field, the runs' dictionaries are merged and their value counts summed over the rows that
end up in hist + train (known only once every row has been read), the frequency threshold is applied at
the end, and each run gets its values' vocabulary ids. Pass 2 reads the runs back block by block in time
order (:mod:`crossadapt.data.time_merge`), maps codes to ids and writes each split's ``.npy`` files front
to back. Peak memory: a block or two of the source and one field's distinct values, never the rows; the
spill (about 5 bytes per value) lives in the dataset's temporary folder and is gone once the dataset is
published.

The same engine appends a stream partition to a dataset (:func:`append_streaming`), optionally growing
the vocabulary (:mod:`crossadapt.data.growth`).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa

from crossadapt.data.atomic import build_atomically, check_target
from crossadapt.data.growth import GrowthConfig, load_pending, save_pending
from crossadapt.data.missing import choose_indicator_fields, numerical_feature_names
from crossadapt.data.prepared import DatasetManifest, PreparedDataset
from crossadapt.data.progress import NoProgress, Progress
from crossadapt.data.schema import DatasetSchema, PrepareConfig
from crossadapt.data.spill import SpilledRows, SpillWriter
from crossadapt.data.stream_source import StreamingSource
from crossadapt.data.stream_vocab import RunIds, VocabularyPlan, build_vocabulary, growth_plan
from crossadapt.data.stream_write import present_columns, write_splits
from crossadapt.data.time_merge import DEFAULT_BLOCK_ROWS, plan_blocks, prefix_rows
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models.spec import CategoricalField, FeatureSpec

SPILL_FOLDER = ".spill"


def spill_tables(tables: Iterable[pa.Table], folder: Path, schema: DatasetSchema, config: PrepareConfig,
                 progress: Progress, *, total_bytes: int | None = None, done_bytes=None) -> SpilledRows:  # fmt: skip
    """Pass 1 over ``tables`` (validated blocks); ``done_bytes()`` reports reading progress in bytes.

    Two stages overlap: this thread reads, parses and validates block k+1 while a worker encodes and
    spills block k (both mostly outside the GIL), so about two blocks are in memory.
    """
    writer = SpillWriter(folder, schema, config)
    rows = 0
    with progress.stage("reading", total_bytes=total_bytes) as update, ThreadPoolExecutor(1) as encoder:
        pending: Future | None = None
        for table in tables:
            if pending is not None:
                rows += pending.result()
                update(rows=rows, done_bytes=done_bytes() if done_bytes else None)
            pending = encoder.submit(writer.add, table)
            del table
        if pending is not None:
            rows += pending.result()
            update(rows=rows, done_bytes=done_bytes() if done_bytes else None)
    return writer.finish()


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
        run_ids = RunIds(spilled)
        plan = build_vocabulary(spilled, config, vocabulary, prefix_rows(blocks, len(spilled.runs), fit_rows), run_ids)
        indicators = choose_indicator_fields(schema, spilled.missing_counts, config.indicator_mode(source.format))
        folders = {name: folder / "splits" / name for name in bounds}
        stats = write_splits(spilled, blocks, run_ids, indicators, folders, progress)
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
    """Encode ``tables`` (validated blocks of one partition, the dataset's schema) as split ``name``.

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
        run_ids = RunIds(spilled)
        plan = growth_plan(spilled, dataset.vocabulary, growth, pending, run_ids)
        stats = write_splits(spilled, blocks, run_ids, manifest.missing_indicator_fields, {name: folder}, progress)
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

