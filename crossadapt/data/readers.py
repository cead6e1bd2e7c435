"""Readers: each format into a ``RawData`` named as its ``DatasetSchema`` says.

- Criteo Kaggle TSV: ``label, I1..I13, C1..C26``, tab-separated, no header; row order is time order.
- Avazu CSV (header): ``click`` is the label; ``hour`` (YYMMDDHH, UTC) gives the time and an
  ``hour_of_day`` field; the other 21 columns (``id`` dropped) are categorical; ``device_ip`` is the
  user key (Avazu's ``device_id`` is one placeholder value for most rows).
- Generic CSV or Parquet (a file or a folder of files) with a schema file.
- MovieLens-100k: see :mod:`crossadapt.data.movielens`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from crossadapt.data.delimited import Kind, read_delimited
from crossadapt.data.errors import DataFormatError, OnBadRows
from crossadapt.data.raw import RawData, SourceInfo, check_columns_exist, validate_rows
from crossadapt.data.schema import DatasetSchema

SourceFormat = Literal["criteo", "avazu", "csv", "parquet", "movielens-100k"]

CRITEO_NUMERICAL = [f"I{i}" for i in range(1, 14)]
CRITEO_CATEGORICAL = [f"C{i}" for i in range(1, 27)]
AVAZU_CATEGORICAL = [
    "C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain", "app_category",
    "device_id", "device_ip", "device_model", "device_type", "device_conn_type",
    *[f"C{i}" for i in range(14, 22)],
]  # fmt: skip


def criteo_schema() -> DatasetSchema:
    return DatasetSchema(label="label", categorical=CRITEO_CATEGORICAL, numerical=CRITEO_NUMERICAL)


def avazu_schema() -> DatasetSchema:
    return DatasetSchema(
        label="click", timestamp="timestamp", categorical=[*AVAZU_CATEGORICAL, "hour_of_day"], user_id="device_ip"
    )


def criteo_kinds() -> dict[str, Kind]:
    """Criteo's 40 columns in file order: the label and I1..I13 as numbers, C1..C26 as text."""
    kinds: dict[str, Kind] = {"label": "float", **dict.fromkeys(CRITEO_NUMERICAL, "float")}
    return kinds | dict.fromkeys(CRITEO_CATEGORICAL, "category")


def avazu_kinds() -> dict[str, Kind]:
    return {"click": "float", "hour": "int", **dict.fromkeys(AVAZU_CATEGORICAL, "category")}


def csv_kinds(schema: DatasetSchema) -> dict[str, Kind]:
    """Labels and numerical fields are parsed as numbers; categorical fields, user key and time as text."""
    kinds: dict[str, Kind] = {c: "category" for c in (schema.user_id, schema.timestamp) if c is not None}
    kinds |= dict.fromkeys(schema.categorical, "category")
    kinds |= dict.fromkeys(schema.numerical, "float")  # a numeric user id may also be a numerical field
    return kinds | {c: "float" for c in (schema.label, schema.conversion, schema.prob) if c is not None}


def read_criteo(path: str | Path, *, on_bad_rows: OnBadRows = "error") -> RawData:
    """Criteo Kaggle ``train.txt``: 40 tab-separated columns, no header; empty fields are missing."""
    path = Path(path)
    kinds = criteo_kinds()
    parsed = read_delimited(path, kinds, delimiter="\t", column_names=list(kinds), on_bad_rows=on_bad_rows)
    source = SourceInfo(format="criteo", path=str(path), bad_rows=parsed.bad_rows)
    raw = RawData(parsed.table, criteo_schema(), source, parsed.lines, parsed.first_data_line, path)
    return validate_rows(raw, on_bad_rows)


def read_avazu(path: str | Path, *, on_bad_rows: OnBadRows = "error") -> RawData:
    """Avazu ``train`` CSV (with header); ``hour`` YYMMDDHH becomes epoch seconds and ``hour_of_day``."""
    path = Path(path)
    parsed = read_delimited(path, avazu_kinds(), delimiter=",", on_bad_rows=on_bad_rows)
    source = SourceInfo(format="avazu", path=str(path), bad_rows=parsed.bad_rows)
    raw = RawData(parsed.table, avazu_schema(), source, parsed.lines, parsed.first_data_line, path)
    return validate_rows(avazu_time(raw, on_bad_rows), on_bad_rows)


def avazu_time(raw: RawData, on_bad_rows: OnBadRows) -> RawData:
    """Replace ``hour`` (YYMMDDHH, UTC) by ``timestamp`` (epoch seconds) and ``hour_of_day`` (text)."""
    hour = pc.fill_null(raw.table.column("hour"), -1).to_numpy()
    day, month, clock = (hour // 100) % 100, (hour // 10_000) % 100, hour % 100
    invalid = (hour < 0) | (clock > 23) | (month < 1) | (month > 12) | (day < 1) | (day > 31)
    raw = raw.drop_bad(invalid, "hour", "not a YYMMDDHH hour", on_bad_rows)
    hour = raw.table.column("hour").to_numpy()
    year, month, day, clock = 2000 + hour // 1_000_000, (hour // 10_000) % 100, (hour // 100) % 100, hour % 100
    months = ((year - 1970) * 12 + month - 1).astype("datetime64[M]")
    days = months.astype("datetime64[D]") + (day - 1).astype("timedelta64[D]")
    seconds = days.astype("datetime64[s]").astype(np.int64) + clock * 3600
    table = raw.table.drop_columns(["hour"])
    table = table.append_column("timestamp", pa.array(seconds, pa.int64())).append_column(
        "hour_of_day", pc.cast(pa.array(clock), pa.string())
    )
    raw.table = table
    return raw


def read_csv(
    path: str | Path, schema: DatasetSchema, *, delimiter: str = ",", on_bad_rows: OnBadRows = "error"
) -> RawData:
    """A delimited file with a header row; the schema says which columns to read and their roles.

    Labels and numerical fields are parsed as numbers; categorical fields, the user key and the
    time are read as text (the time may be epoch seconds or ISO-8601).
    """
    path = Path(path)
    parsed = read_delimited(path, csv_kinds(schema), delimiter=delimiter, on_bad_rows=on_bad_rows)
    source = SourceInfo(format="csv", path=str(path), bad_rows=parsed.bad_rows)
    raw = RawData(parsed.table, schema, source, parsed.lines, parsed.first_data_line, path)
    return validate_rows(raw, on_bad_rows)


def read_parquet(path: str | Path, schema: DatasetSchema, *, on_bad_rows: OnBadRows = "error") -> RawData:
    """A Parquet file or a folder of Parquet files (e.g. one per hour), read as one table."""
    path = Path(path)
    dataset = pads.dataset(path, format="parquet")
    missing = [c for c in schema.columns if c not in dataset.schema.names]
    if missing:
        raise DataFormatError(path, None, missing[0], "the schema names this column but the data lacks it")
    table = dataset.to_table(columns=schema.columns)
    if table.num_rows == 0:
        raise DataFormatError(path, None, None, "no rows")
    return validate_rows(RawData(table, schema, SourceInfo(format="parquet", path=str(path)), path=path), on_bad_rows)


def from_table(
    table: pa.Table, schema: DatasetSchema, *, on_bad_rows: OnBadRows = "error", source_format: str = "table"
) -> RawData:
    """An in-memory Arrow table (e.g. from :func:`generate_synthetic`)."""
    check_columns_exist(table, schema, None)
    if table.num_rows == 0:
        raise DataFormatError(None, None, None, "the table has no rows")
    table = table.select(schema.columns)
    return validate_rows(RawData(table, schema, SourceInfo(format=source_format)), on_bad_rows)


def read_source(
    source_format: SourceFormat,
    path: str | Path,
    *,
    schema: DatasetSchema | None = None,
    on_bad_rows: OnBadRows = "error",
    delimiter: str = ",",
) -> RawData:
    """Dispatch on format. ``csv`` and ``parquet`` need a schema; the others have a fixed one."""
    if source_format == "criteo":
        return read_criteo(path, on_bad_rows=on_bad_rows)
    if source_format == "avazu":
        return read_avazu(path, on_bad_rows=on_bad_rows)
    if source_format == "movielens-100k":
        from crossadapt.data.movielens import read_movielens_100k

        return read_movielens_100k(path, on_bad_rows=on_bad_rows)
    if schema is None:
        raise ValueError(f"format {source_format!r} needs a schema (DatasetSchema or a schema file)")
    if source_format == "csv":
        return read_csv(path, schema, delimiter=delimiter, on_bad_rows=on_bad_rows)
    if source_format == "parquet":
        return read_parquet(path, schema, on_bad_rows=on_bad_rows)
    raise ValueError(f"unknown format {source_format!r}")
