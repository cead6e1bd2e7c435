"""A source file (or several) read as a stream of validated Arrow tables, in bounded memory.

Every format the in-memory readers know except MovieLens (a join of three small files) streams:
Criteo (one file or several ``day_N`` files, file order = time order), Avazu, delimited text with a
schema, and Parquet (a file or a folder). Text may be gzip-compressed. Each parsed block goes through
the same checks as :func:`crossadapt.data.raw.validate_rows`, with the same error messages (file,
physical line, column) and the same bad-row accounting; each block (or Parquet batch of at most ``chunk_rows``
rows) comes out as one table, so memory holds a block or two, never the file.

Example::

    source = StreamingSource.open("criteo", ["day_0.gz", "day_1.gz"])
    for table in source:          # pa.Table per block, columns as source.schema names them
        ...
    source.info.bad_rows           # rows skipped so far (on_bad_rows="skip")
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from crossadapt.data.blocks import DEFAULT_BLOCK_BYTES, iter_text_blocks, read_first_line, source_files
from crossadapt.data.delimited import Kind, header_names, parse_block
from crossadapt.data.errors import DataFormatError, OnBadRows
from crossadapt.data.raw import RawData, SourceInfo, check_columns_exist, validate_rows
from crossadapt.data.readers import (
    avazu_kinds, avazu_schema, avazu_time, criteo_kinds, criteo_schema, csv_kinds,
)  # fmt: skip
from crossadapt.data.schema import DatasetSchema

STREAMING_FORMATS = ("criteo", "avazu", "csv", "parquet")
DEFAULT_CHUNK_ROWS = 1 << 18  # Parquet rows per batch (text: a block of block_bytes)


class StreamingSource:
    """Iterate validated chunks (``pa.Table``, the schema's columns) of one or more files.

    Attributes:
        schema: the columns' roles (fixed for criteo and avazu, given for csv and parquet).
        info: format, path, rows delivered so far and the bad-row report (complete after iteration).
        files: the files in reading order.
        total_bytes: their size on disk; ``bytes_done`` grows as they are read (for MB/s).
    """

    def __init__(
        self,
        source_format: str,
        files: list[Path],
        schema: DatasetSchema,
        *,
        on_bad_rows: OnBadRows,
        delimiter: str,
        block_bytes: int,
        chunk_rows: int,
    ):
        self.format = source_format
        self.files = files
        self.schema = schema
        self.on_bad_rows = on_bad_rows
        self.delimiter = delimiter
        self.block_bytes = block_bytes
        self.chunk_rows = chunk_rows
        path = str(files[0]) if len(files) == 1 else str(files[0].parent if files else "")
        self.info = SourceInfo(format=source_format, path=path)
        if len(files) > 1:
            self.info.detail["files"] = len(files)
        self.total_bytes = sum(f.stat().st_size for f in files)
        self.bytes_done = 0

    @classmethod
    def open(
        cls,
        source_format: str,
        paths: str | Path | Sequence[str | Path],
        *,
        schema: DatasetSchema | None = None,
        on_bad_rows: OnBadRows = "error",
        delimiter: str = ",",
        block_bytes: int = DEFAULT_BLOCK_BYTES,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
    ) -> "StreamingSource":
        if source_format not in STREAMING_FORMATS:
            raise ValueError(f"format {source_format!r} does not stream; streaming formats: {', '.join(STREAMING_FORMATS)}")
        if source_format in ("csv", "parquet") and schema is None:
            raise ValueError(f"format {source_format!r} needs a schema (DatasetSchema or a schema file)")
        if block_bytes < 1 or chunk_rows < 1:
            raise ValueError("block_bytes and chunk_rows must be positive")
        if source_format == "parquet":
            given = [paths] if isinstance(paths, (str, Path)) else list(paths)
            files = [Path(f) for p in given for f in pads.dataset(Path(p), format="parquet").files]
        else:
            files = source_files(paths)
        fixed = {"criteo": criteo_schema, "avazu": avazu_schema}.get(source_format)
        schema = fixed() if fixed is not None else schema
        return cls(source_format, files, schema, on_bad_rows=on_bad_rows, delimiter=delimiter,
                   block_bytes=block_bytes, chunk_rows=chunk_rows)  # fmt: skip

    def __iter__(self) -> Iterator[pa.Table]:
        """Validated tables in file order (one per text block or Parquet batch of at most ``chunk_rows``
        rows; blocks that lost every row are left out); raises at a bad row in error mode."""
        for table in self._validated_tables():
            if table.num_rows:
                yield table
        if self.info.rows == 0:
            raise DataFormatError(self.info.path, None, None, "no rows left to prepare")

    # ---------------------------------------------------------------------------------- per format

    def _validated_tables(self) -> Iterator[pa.Table]:
        done = 0
        for path in self.files:
            tables = self._parquet_tables(path) if self.format == "parquet" else self._text_tables(path)
            for raw in tables:
                if self.format == "avazu":
                    raw = avazu_time(raw, self.on_bad_rows)
                raw = validate_rows(raw, self.on_bad_rows, allow_empty=True)
                self.info.bad_rows.merge(raw.source.bad_rows)
                self.info.rows += raw.table.num_rows
                yield raw.table.select(self.schema.columns)
            done += path.stat().st_size
            self.bytes_done = done

    def _text_tables(self, path: Path) -> Iterator[RawData]:
        kinds, names, skip = self._layout(path)
        delimiter = "\t" if self.format == "criteo" else self.delimiter
        rows = 0
        before = self.bytes_done
        for block in iter_text_blocks(path, block_bytes=self.block_bytes, skip_lines=skip):
            parsed = parse_block(block.data, path, block.first_line, names, kinds, delimiter=delimiter,
                                 on_bad_rows=self.on_bad_rows)  # fmt: skip
            rows += parsed.table.num_rows
            self.bytes_done = before + block.source_bytes
            del block  # the text is parsed: do not hold it while the table is used
            source = SourceInfo(format=self.format, path=str(path), bad_rows=parsed.bad_rows)
            yield RawData(parsed.table, self.schema, source, parsed.lines, parsed.first_data_line, path)
        if rows == 0:
            raise DataFormatError(path, None, None, "the file has no data rows")

    def _layout(self, path: Path) -> tuple[dict[str, Kind], list[str], int]:
        """(column kinds, every column name in file order, header lines to skip)."""
        if self.format == "criteo":
            kinds = criteo_kinds()
            return kinds, list(kinds), 0
        kinds = avazu_kinds() if self.format == "avazu" else csv_kinds(self.schema)
        if path.stat().st_size == 0:
            raise DataFormatError(path, None, None, "the file is empty")
        header = header_names(read_first_line(path), self.delimiter)
        for column in kinds:
            if column not in header:
                raise DataFormatError(path, 1, column, "the schema names this column but the file header lacks it")
        return kinds, header, 1

    def _parquet_tables(self, path: Path) -> Iterator[RawData]:
        reader = pq.ParquetFile(path)
        missing = [c for c in self.schema.columns if c not in reader.schema_arrow.names]
        if missing:
            raise DataFormatError(path, None, missing[0], "the schema names this column but the data lacks it")
        offset = 0
        for batch in reader.iter_batches(batch_size=self.chunk_rows, columns=self.schema.columns):
            table = pa.Table.from_batches([batch])
            source = SourceInfo(format="parquet", path=str(path))
            raw = RawData(table, self.schema, source, path=path, row_offset=offset)
            check_columns_exist(table, self.schema, path)
            offset += table.num_rows
            yield raw

