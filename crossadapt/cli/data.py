"""``crossadapt data ...``: prepare datasets, append stream partitions, fetch MovieLens-100k."""

from __future__ import annotations

import time
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from crossadapt.data.movielens import fetch_movielens_100k
from crossadapt.data.prepare import append_split, prepare_dataset
from crossadapt.data.prepared import PreparedDataset
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


def _fail(message: str) -> None:
    """A problem the user can fix: one red line on stderr, exit code 2 (as the root CLI does)."""
    errors.print(f"[red]error:[/red] {message}", markup=True, highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@app.command("prepare")
def prepare_command(
    format: Format = typer.Option(..., "--format", "-f", help="Source format. criteo: Kaggle train.txt (TSV, no header). avazu: train CSV. movielens-100k: folder with ml-100k.inter/.user/.item (see fetch-movielens). csv/parquet: need --schema. synthetic: generated, needs no --input."),
    input: Path | None = typer.Option(None, "--input", "-i", help="Source file or folder (every format but synthetic)."),
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
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out."),
) -> None:
    """Read a click log, build the vocabulary, split by time and write a prepared dataset."""
    fmt = format.value
    config = PrepareConfig(
        min_count=min_count if min_count is not None else DEFAULT_MIN_COUNT.get(fmt, 1),
        split=split, log_transform=log_transform, on_bad_rows=on_bad_rows.value,
    )  # fmt: skip
    started = time.perf_counter()
    try:
        if fmt == "synthetic":
            overrides = {"seed": seed} | ({"rows": rows} if rows is not None else {})
            source = synthetic_preset(preset, **overrides)
        elif input is None:
            _fail(f"--input is required for --format {fmt}")
        else:
            source = input
        if fmt in ("csv", "parquet") and schema is None:
            _fail(f"--format {fmt} needs --schema FILE (a JSON/YAML DatasetSchema)")
        kwargs = dict(source_format=None if fmt == "synthetic" else fmt, config=config, overwrite=overwrite)
        if schema is not None:
            kwargs["schema"] = DatasetSchema.from_file(schema)
        if vocabulary is not None:
            kwargs["vocabulary"] = Vocabulary.load(vocabulary)
        ds = prepare_dataset(source, out, **kwargs)
    except (OSError, ValueError) as exc:  # DataFormatError, FileExistsError, ValidationError ...
        _fail(str(exc))
    print_summary(ds, time.perf_counter() - started)


@app.command("append")
def append_command(
    dataset: Path = typer.Option(..., "--dataset", "-d", help="A prepared dataset folder."),
    name: str = typer.Option(..., "--name", "-n", help="Name of the new split, e.g. stream-2024-01-08."),
    format: Format = typer.Option(..., "--format", "-f", help="Format of the new partition (not synthetic)."),
    input: Path = typer.Option(..., "--input", "-i", help="The new partition's file or folder."),
    on_bad_rows: BadRows | None = typer.Option(None, "--on-bad-rows", help="Default: as the dataset was prepared."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing split of that name."),
) -> None:
    """Encode a new stream partition with the dataset's vocabulary and add it as a split."""
    if format is Format.synthetic:
        _fail("append reads a file; prepare synthetic data with `prepare`")
    started = time.perf_counter()
    try:
        part = append_split(dataset, name, input, source_format=format.value, overwrite=overwrite,
                            on_bad_rows=None if on_bad_rows is None else on_bad_rows.value)  # fmt: skip
    except (OSError, ValueError) as exc:  # DataFormatError, FileExistsError, ValidationError ...
        _fail(str(exc))
    seconds = time.perf_counter() - started
    console.print(
        f"added split [bold]{name}[/bold]: {len(part):,} rows, CTR {float(part.label.mean()):.4f}, "
        f"{seconds:.2f} s ({len(part) / max(seconds, 1e-9):,.0f} rows/s)"
    )
    print_summary(PreparedDataset.open(dataset), None)


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
    for name in m.feature_spec.numerical:
        fields.add_row(name, "numerical", "-")
    console.print(fields)
    total = sum(m.splits.values())
    line = f"{total:,} rows, {len(m.feature_spec.categorical)} categorical + {len(m.feature_spec.numerical)} numerical fields, vocab {m.vocab_hash[:12]}"
    if seconds is not None:
        line += f", {seconds:.2f} s ({total / max(seconds, 1e-9):,.0f} rows/s)"
    if m.source.bad_rows.skipped:
        line += f", [yellow]{m.source.bad_rows.skipped:,} bad rows skipped[/yellow] {m.source.bad_rows.by_reason}"
    console.print(line)
