"""``crossadapt data ...``: prepare datasets, append stream partitions, fetch MovieLens-100k."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from crossadapt.data.growth import GrowthConfig
from crossadapt.data.movielens import fetch_movielens_100k
from crossadapt.data.prepare import append_split, prepare_dataset
from crossadapt.data.prepared import PreparedDataset
from crossadapt.data.progress import BarProgress, NoProgress
from crossadapt.data.schema import DEFAULT_MIN_COUNT, DatasetSchema, PrepareConfig
from crossadapt.data.synthetic_config import PRESETS, synthetic_preset
from crossadapt.data.vocabulary import Vocabulary

app = typer.Typer(
    help=(
        "Datasets for CrossAdapt. `prepare` turns a click log into a prepared dataset folder: "
        "time-ordered hist/train/online/test splits as memory-mapped arrays, plus the vocabulary "
        "(built from hist + train only). Try: crossadapt data prepare --format synthetic --preset small --out data/small"
    ),
    no_args_is_help=True,
)
console = Console()
errors = Console(stderr=True)


class Format(str, Enum):
    synthetic = "synthetic"
    criteo = "criteo"
    avazu = "avazu"
    movielens = "movielens-100k"
    csv = "csv"
    parquet = "parquet"


class BadRows(str, Enum):
    error = "error"
    skip = "skip"


class MissingIndicators(str, Enum):
    auto = "auto"
    all = "all"
    none = "none"


class NegativeValues(str, Enum):
    keep = "keep"
    missing = "missing"


def _progress(quiet: bool):
    return NoProgress() if quiet else BarProgress(errors)


def _one_or_many(paths: list[Path]) -> Path | list[Path]:
    return paths[0] if len(paths) == 1 else list(paths)


def _fail(message: str) -> None:
    """A problem the user can fix: one red line on stderr, exit code 2 (as the root CLI does)."""
    errors.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command("prepare")
def prepare_command(
    format: Format = typer.Option(..., "--format", "-f", help="Source format. criteo: Kaggle train.txt (TSV, no header). avazu: train CSV. movielens-100k: folder with ml-100k.inter/.user/.item (see fetch-movielens). csv/parquet: need --schema. synthetic: generated, needs no --input."),
    input: list[Path] | None = typer.Option(None, "--input", "-i", help="Source file or folder (every format but synthetic); repeat for several files in time order (Criteo day_0 day_1 ...). A folder is read in natural order (day_2 before day_10). Text may be gzip-compressed."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to create for the prepared dataset."),
    schema: Path | None = typer.Option(None, "--schema", help="JSON/YAML DatasetSchema for csv/parquet: label, categorical, numerical, and optional timestamp, conversion, user_id."),
    preset: str = typer.Option("criteo_like", "--preset", help=f"Synthetic preset: {', '.join(PRESETS)}."),
    rows: int | None = typer.Option(None, "--rows", help="Synthetic rows (default: the preset's)."),
    seed: int = typer.Option(0, "--seed", help="Synthetic seed (same seed, same data)."),
    min_count: int | None = typer.Option(None, "--min-count", help="Values seen fewer times in hist+train become <UNK>. Default per format: " + ", ".join(f"{k} {v}" for k, v in DEFAULT_MIN_COUNT.items()) + "."),
    split: str = typer.Option("4:4:1:1", "--split", help="Sizes of the hist, train, online and test splits (in time order) as ratios a:b:c:d."),
    on_bad_rows: BadRows = typer.Option(BadRows.error, "--on-bad-rows", help="error: stop at the first malformed row (file, line, column shown). skip: drop bad rows and count them in the manifest."),
    delimiter: str = typer.Option(",", "--delimiter", help="Column separator for --format csv (use $'\\t' for tabs)."),
    vocabulary: Path | None = typer.Option(None, "--vocabulary", help="Reuse the vocabulary of this prepared dataset (e.g. the teacher's), so ids mean the same values."),
    log_transform: bool = typer.Option(True, "--log-transform/--no-log-transform", help="Numerical x -> log2(x) where x > 2."),
    missing_indicators: MissingIndicators | None = typer.Option(None, "--missing-indicators", help="A 0/1 <field>__missing input per numerical field, so a missing value is not read as 0. auto: for fields with a missing value; all; none. Default: none for synthetic data (its click model reads missing as 0), auto otherwise."),
    negative_values: NegativeValues = typer.Option(NegativeValues.keep, "--negative-values", help="Negative numerical values (Criteo's I2 has a few): keep them as values, or treat them as missing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no summary (for scripts); errors still go to stderr."),
) -> None:
    """Read a click log, build the vocabulary, split by time and write a prepared dataset.

    Files are streamed in bounded memory (two passes: count, then encode), so a file larger than RAM works.
    """
    fmt = format.value
    config = PrepareConfig(
        min_count=min_count if min_count is not None else DEFAULT_MIN_COUNT.get(fmt, 1),
        split=split, log_transform=log_transform, on_bad_rows=on_bad_rows.value,
        missing_indicators=None if missing_indicators is None else missing_indicators.value,
        negative_numerical=negative_values.value,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        if fmt == "synthetic":
            overrides = {"seed": seed} | ({"rows": rows} if rows is not None else {})
            source = synthetic_preset(preset, **overrides)
        elif not input:
            _fail(f"--input is required for --format {fmt}")
        else:
            source = _one_or_many(input)
        if fmt in ("csv", "parquet") and schema is None:
            _fail(f"--format {fmt} needs --schema FILE (a JSON/YAML DatasetSchema)")
        kwargs = dict(source_format=None if fmt == "synthetic" else fmt, config=config, overwrite=overwrite,
                      progress=_progress(quiet), delimiter=delimiter)  # fmt: skip
        if schema is not None:
            kwargs["schema"] = DatasetSchema.from_file(schema)
        if vocabulary is not None:
            kwargs["vocabulary"] = Vocabulary.load(vocabulary)
        ds = prepare_dataset(source, out, **kwargs)
    except (OSError, ValueError) as exc:  # DataFormatError, FileExistsError, ValidationError ...
        _fail(str(exc))
    if not quiet:
        print_summary(ds, time.perf_counter() - started)


@app.command("append")
def append_command(
    dataset: Path = typer.Option(..., "--dataset", "-d", help="A prepared dataset folder."),
    name: str = typer.Option(..., "--name", "-n", help="Name of the new split, e.g. stream-2024-01-08."),
    format: Format = typer.Option(..., "--format", "-f", help="Format of the new partition (not synthetic)."),
    input: list[Path] = typer.Option(..., "--input", "-i", help="The new partition's file or folder (repeat for several files, in time order)."),
    on_bad_rows: BadRows | None = typer.Option(None, "--on-bad-rows", help="Default: as the dataset was prepared."),
    grow: bool = typer.Option(False, "--grow/--no-grow", help="Grow the vocabulary: a new value seen --grow-min-count times (in this and earlier appended partitions) gets a new id instead of <UNK> (a new vocabulary version)."),
    grow_min_count: int = typer.Option(10, "--grow-min-count", min=1, help="Sightings a new value needs for an id (with --grow)."),
    grow_field: list[str] | None = typer.Option(None, "--grow-field", help="Per-field threshold FIELD=N (repeatable; with --grow)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing split of that name."),
    schema: Path | None = typer.Option(None, "--schema", help="Schema file for csv/parquet (default: the dataset's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars and no summary (for scripts)."),
) -> None:
    """Encode a new stream partition with the dataset's vocabulary (optionally growing it) and add it as a split."""
    if format is Format.synthetic:
        _fail("append reads a file; prepare synthetic data with `prepare`")
    started = time.perf_counter()
    try:
        growth = GrowthConfig(min_count=grow_min_count, min_count_per_field=_field_counts(grow_field or [])) if grow else None
        before = PreparedDataset.open(dataset).manifest.vocab_version
        part = append_split(dataset, name, _one_or_many(input), source_format=format.value, overwrite=overwrite,
                            on_bad_rows=None if on_bad_rows is None else on_bad_rows.value, growth=growth,
                            schema=None if schema is None else DatasetSchema.from_file(schema),
                            progress=_progress(quiet))  # fmt: skip
    except (OSError, ValueError) as exc:  # DataFormatError, FileExistsError, ValidationError ...
        _fail(str(exc))
    if quiet:
        return
    seconds = time.perf_counter() - started
    ds = PreparedDataset.open(dataset)
    grown = "" if ds.manifest.vocab_version == before else f", vocabulary grown to version {ds.manifest.vocab_version}"
    console.print(
        f"added split [bold]{name}[/bold]: {len(part):,} rows, CTR {float(part.label.mean()):.4f}, "
        f"{seconds:.2f} s ({len(part) / max(seconds, 1e-9):,.0f} rows/s){grown}"
    )
    print_summary(ds, None)


def _field_counts(pairs: list[str]) -> dict[str, int]:
    """``["C3=5", "C7=20"]`` -> ``{"C3": 5, "C7": 20}``."""
    out = {}
    for pair in pairs:
        field, _, count = pair.partition("=")
        if not field or not count.strip().isdigit():
            raise ValueError(f"--grow-field {pair!r}: expected FIELD=N")
        out[field] = int(count)
    return out


@app.command("info")
def info_command(dataset: Path = typer.Argument(..., help="A prepared dataset folder.")) -> None:
    """Show a prepared dataset's splits, fields and vocabulary sizes."""
    try:
        ds = PreparedDataset.open(dataset)
    except (OSError, ValueError) as exc:
        _fail(str(exc))
    print_summary(ds, None)


@app.command("fetch-movielens")
def fetch_movielens_command(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for ml-100k.inter, ml-100k.user and ml-100k.item."),
    wheel: Path | None = typer.Option(None, "--wheel", help="Use an already downloaded recbole-1.2.1 wheel instead of pip download."),
) -> None:
    """Download MovieLens-100k (from the recbole==1.2.1 wheel on PyPI) into --out."""
    try:
        folder = fetch_movielens_100k(out, wheel=wheel)
    except (RuntimeError, OSError, KeyError) as exc:
        _fail(str(exc))
    console.print(f"MovieLens-100k in {folder}. Next: crossadapt data prepare --format movielens-100k --input {folder} --out DIR")


def _when(stamp: int) -> str:
    """Epoch seconds as a UTC date-time; other integers (e.g. row numbers) as they are."""
    if 0 < stamp < 4_102_444_800:  # before 2100
        return datetime.fromtimestamp(stamp, tz=timezone.utc).strftime("%Y-%m-%d %H:%M")
    return str(stamp)


def print_summary(ds: PreparedDataset, seconds: float | None) -> None:
    m = ds.manifest
    splits = Table(title=f"{ds.path}  ({m.source.format})")
    for column in ("split", "rows", "CTR", "CVR (per click)", "time range (UTC)"):
        splits.add_column(column, justify="right" if column != "split" else "left", no_wrap=column != "CVR (per click)")
    for name, rows in m.splits.items():
        stats = m.split_stats.get(name)
        cvr = "-" if stats is None or stats.conversion_rate is None else f"{stats.conversion_rate:.4f}"
        span = "-" if stats is None or stats.time_range is None else " .. ".join(map(_when, stats.time_range))
        splits.add_row(name, f"{rows:,}", "-" if stats is None else f"{stats.click_rate:.4f}", cvr, span)
    console.print(splits)
    fields = Table(title="fields")
    fields.add_column("field")
    fields.add_column("kind")
    fields.add_column("vocab size", justify="right")
    for f in m.feature_spec.categorical:
        fields.add_row(f.name, "categorical" + (" (user)" if f.name == ds.schema.user_id else ""), f"{f.vocab_size:,}")
    indicators = {f"{f}__missing" for f in m.missing_indicator_fields}
    for name in m.feature_spec.numerical:
        fields.add_row(name, "missing indicator" if name in indicators else "numerical", "-")
    console.print(fields)
    total = sum(m.splits.values())
    indicators = f" ({len(m.missing_indicator_fields)} missing indicators)" if m.missing_indicator_fields else ""
    line = (f"{total:,} rows, {len(m.feature_spec.categorical)} categorical + {len(m.feature_spec.numerical)} numerical "
            f"fields{indicators}, vocab {m.vocab_hash[:12]} v{m.vocab_version}")  # fmt: skip
    if seconds is not None:
        line += f", {seconds:.2f} s ({total / max(seconds, 1e-9):,.0f} rows/s)"
    if m.source.bad_rows.skipped:
        line += f", [yellow]{m.source.bad_rows.skipped:,} bad rows skipped[/yellow] {m.source.bad_rows.by_reason}"
    console.print(line)
