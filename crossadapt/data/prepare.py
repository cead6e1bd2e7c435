"""``prepare_dataset`` (raw source -> prepared folder) and ``append_split`` (a new stream partition).

Files in a streaming format (criteo, avazu, csv, parquet; plain or gzip; one file, a folder or a list)
are prepared by :mod:`crossadapt.data.streaming` in bounded memory; in-memory sources (an Arrow table,
``RawData``, a synthetic config, MovieLens) by :func:`crossadapt.data.encode.encode_rows`. Both give the
same arrays, vocabulary and manifest for the same rows. ``append_split`` always streams, and can grow
the vocabulary (:mod:`crossadapt.data.growth`).

Writes are atomic: everything is built in a hidden temp sibling folder which is renamed into
place at the end; a failure leaves no partial dataset behind and an existing one untouched.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from crossadapt.data.arrays import OPTIONAL_COLUMNS, SplitArrays
from crossadapt.data.atomic import build_atomically as _build_atomically
from crossadapt.data.atomic import check_target as _check_target
from crossadapt.data.blocks import DEFAULT_BLOCK_BYTES
from crossadapt.data.encode import encode_rows
from crossadapt.data.errors import OnBadRows
from crossadapt.data.growth import GrowthConfig
from crossadapt.data.missing import numerical_feature_names
from crossadapt.data.prepared import DatasetManifest, PreparedDataset, SplitStats
from crossadapt.data.progress import Progress
from crossadapt.data.raw import RawData
from crossadapt.data.readers import SourceFormat, from_table, read_source
from crossadapt.data.schema import DEFAULT_MIN_COUNT, DatasetSchema, PrepareConfig
from crossadapt.data.stream_source import DEFAULT_CHUNK_ROWS, STREAMING_FORMATS, StreamingSource
from crossadapt.data.streaming import append_streaming, prepare_streaming
from crossadapt.data.synthetic_config import SyntheticConfig
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models.spec import CategoricalField, FeatureSpec

Source = RawData | pa.Table | SyntheticConfig | str | Path | list[str | Path]
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=-]*$")


def load_source(
    source: Source,
    *,
    source_format: SourceFormat | None = None,
    schema: DatasetSchema | None = None,
    on_bad_rows: OnBadRows = "error",
    delimiter: str = ",",
) -> RawData:
    """Any accepted source as ``RawData`` (files are read with the format's reader)."""
    if isinstance(source, RawData):
        return source
    if isinstance(source, SyntheticConfig):
        from crossadapt.data.synthetic import generate_synthetic, synthetic_schema

        raw = from_table(generate_synthetic(source), synthetic_schema(source), source_format="synthetic")
        raw.source.detail = {"seed": source.seed, "rows": source.rows, "config": source.model_dump_json()}
        return raw
    if isinstance(source, pa.Table):
        if schema is None:
            raise ValueError("an Arrow table needs a schema")
        return from_table(source, schema, on_bad_rows=on_bad_rows)
    if source_format is None:
        raise ValueError(f"give source_format for {source} (one of criteo, avazu, csv, parquet, movielens-100k)")
    return read_source(source_format, source, schema=schema, on_bad_rows=on_bad_rows, delimiter=delimiter)


def default_config(source: Source, source_format: str | None) -> PrepareConfig:
    """The paper's threshold for the source's format (criteo 10, avazu 5, movielens 2, ...)."""
    kind = "synthetic" if isinstance(source, SyntheticConfig) else (source_format or "csv")
    if isinstance(source, RawData):
        kind = source.source.format
    return PrepareConfig(min_count=DEFAULT_MIN_COUNT.get(kind, 1))


def prepare_dataset(
    source: Source,
    out: str | Path,
    *,
    source_format: SourceFormat | None = None,
    schema: DatasetSchema | None = None,
    config: PrepareConfig | None = None,
    vocabulary: Vocabulary | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    streaming: bool = True,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    delimiter: str = ",",
) -> PreparedDataset:
    """Read, encode, split and write a dataset; returns it opened.

    Args:
        source: a file/folder path or a list of them, in time order (with ``source_format``), an
            Arrow table (with ``schema``), a ``SyntheticConfig`` (generated on the fly) or ``RawData``.
        out: the dataset folder to create.
        config: preprocessing; default: ``PrepareConfig`` with the format's min_count.
        vocabulary: reuse these fields' ids (e.g. ``Vocabulary.load(teacher_dataset)``); fields it
            lacks get a new vocabulary from this data's hist + train.
        overwrite: replace an existing dataset at ``out`` (atomically swapped in at the end).
        progress: where to report long work (e.g. ``BarProgress()``); default: silent.
        streaming: files in a streaming format are read in bounded memory (False: read whole, the
            in-memory path, kept for comparison); ``block_bytes`` (text read per block) and
            ``chunk_rows`` (Parquet rows per batch, rows per written block) size the stream.
        delimiter: the column separator of ``csv`` files.
    """
    started = time.perf_counter()
    out = Path(out)
    _check_target(out, overwrite)
    config = config or default_config(source, source_format)
    if streaming and _is_files(source) and source_format in STREAMING_FORMATS:
        stream = StreamingSource.open(source_format, source, schema=schema, on_bad_rows=config.on_bad_rows,
                                      delimiter=delimiter, block_bytes=block_bytes, chunk_rows=chunk_rows)  # fmt: skip
        return prepare_streaming(stream, out, config=config, vocabulary=vocabulary, overwrite=overwrite,
                                 progress=progress, block_rows=chunk_rows)  # fmt: skip
    if isinstance(source, list):
        raise ValueError("a list of files is read by the streaming path (a streaming format, streaming=True)")
    raw = load_source(source, source_format=source_format, schema=schema, on_bad_rows=config.on_bad_rows, delimiter=delimiter)
    bounds = config.split_bounds(raw.table.num_rows)
    fit_rows = bounds["train"][1]  # hist + train: the only rows a model may learn the vocabulary from
    encoded = encode_rows(raw, config, vocabulary=vocabulary, fit_rows=fit_rows)
    if vocabulary is not None and vocabulary.fields == list(raw.schema.categorical):
        encoded.vocabulary = vocabulary  # every field reused: the same vocabulary, version and history included
    spec = FeatureSpec(
        categorical=tuple(CategoricalField(name=f, vocab_size=encoded.vocabulary.size(f)) for f in raw.schema.categorical),
        numerical=numerical_feature_names(raw.schema, encoded.indicator_fields),
    )
    splits = {name: encoded.arrays.slice(a, b) for name, (a, b) in bounds.items()}
    manifest = DatasetManifest(
        schema=raw.schema,
        feature_spec=spec,
        splits={name: len(part) for name, part in splits.items()},
        split_stats={name: split_stats(part) for name, part in splits.items()},
        columns=present_columns(encoded.arrays),
        preprocessing=config,
        vocab_hash=encoded.vocabulary.hash,
        vocab_reused_fields=encoded.reused_fields,
        vocab_version=encoded.vocabulary.version,
        missing_indicator_fields=encoded.indicator_fields,
        source=raw.source,
    )

    def build(folder: Path) -> None:
        encoded.vocabulary.save(folder / "vocab")
        for name, part in splits.items():
            write_split(folder / "splits" / name, part)
        manifest.prepare_seconds = round(time.perf_counter() - started, 3)
        manifest.write(folder)  # last: a folder with a manifest is complete

    _build_atomically(out, build, overwrite)
    return PreparedDataset.open(out)


def append_split(
    dataset: str | Path | PreparedDataset,
    name: str,
    source: Source,
    *,
    source_format: SourceFormat | None = None,
    schema: DatasetSchema | None = None,
    on_bad_rows: OnBadRows | None = None,
    overwrite: bool = False,
    growth: GrowthConfig | None = None,
    progress: Progress | None = None,
    block_bytes: int = DEFAULT_BLOCK_BYTES,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> SplitArrays:
    """Encode a new partition (e.g. a day of stream data) with the dataset's vocabulary and
    preprocessing, and add it as split ``name``, in time order, streaming files in bounded memory.

    Without ``growth`` values the vocabulary lacks become ``<UNK>``. With ``growth`` a new value that
    has been seen ``growth.min_count`` times (this partition plus earlier pending sightings) gets a new
    id: the vocabulary grows to a new version, and the manifest's feature spec, ``vocab_hash`` and
    ``vocab_version`` follow; ``split_vocab_versions[name]`` records the version the split uses.
    """
    ds = dataset if isinstance(dataset, PreparedDataset) else PreparedDataset.open(dataset)
    if not _SPLIT_NAME.match(name):
        raise ValueError(f"split name {name!r}: use letters, digits, '_', '-', '.', '='")
    if name in ds.manifest.splits and not overwrite:
        raise FileExistsError(f"{ds.path} already has a split {name!r} (pass overwrite=True to replace it)")
    schema = schema or ds.schema
    if schema.categorical != ds.schema.categorical or schema.numerical != ds.schema.numerical:
        raise ValueError("the partition's schema must list the dataset's categorical and numerical fields in order")
    bad_rows = on_bad_rows or ds.manifest.preprocessing.on_bad_rows
    stream = dict(total_bytes=None, done_bytes=None)
    if _is_files(source) and source_format in STREAMING_FORMATS:
        reader = StreamingSource.open(source_format, source, schema=schema, on_bad_rows=bad_rows,
                                      block_bytes=block_bytes, chunk_rows=chunk_rows)  # fmt: skip
        tables, stream = reader, dict(total_bytes=reader.total_bytes, done_bytes=lambda: reader.bytes_done)
        if reader.schema.categorical != ds.schema.categorical or reader.schema.numerical != ds.schema.numerical:
            raise ValueError("the partition's schema must list the dataset's categorical and numerical fields in order")
    else:
        if isinstance(source, list):
            raise ValueError("a list of files needs a streaming format (criteo, avazu, csv, parquet)")
        raw = load_source(source, source_format=source_format, schema=schema, on_bad_rows=bad_rows)
        tables = [raw.table.select(raw.schema.columns)]
    append_streaming(ds, name, tables, growth=growth, overwrite=overwrite, progress=progress,
                     block_rows=chunk_rows, **stream)  # fmt: skip
    return PreparedDataset.open(ds.path).split(name)


def _is_files(source: Source) -> bool:
    if isinstance(source, (str, Path)):
        return True
    return isinstance(source, list) and all(isinstance(item, (str, Path)) for item in source)


def present_columns(arrays: SplitArrays) -> list[str]:
    return ["categorical", "numerical", "label"] + [c for c in OPTIONAL_COLUMNS if getattr(arrays, c) is not None]


def split_stats(part: SplitArrays) -> SplitStats:
    rows, clicks = len(part), float(part.label.sum())
    return SplitStats(
        rows=rows,
        click_rate=float(part.label.mean()) if rows else 0.0,
        conversion_rate=None if part.conversion is None or not clicks else float(part.conversion.sum() / clicks),
        time_range=None if part.timestamp is None or not rows else (int(part.timestamp[0]), int(part.timestamp[-1])),
    )


def write_split(folder: Path, part: SplitArrays) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for column in present_columns(part):
        np.save(folder / f"{column}.npy", np.ascontiguousarray(getattr(part, column)))
