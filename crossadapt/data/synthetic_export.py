"""Write a synthetic table in Criteo's Kaggle TSV format (for reader tests and the data benchmark)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from crossadapt.data.readers import CRITEO_CATEGORICAL, CRITEO_NUMERICAL

_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
_GOLDEN = np.uint64(2654435761)  # odd, so v -> v * _GOLDEN mod 2^32 is a bijection


def hex_tokens(values: np.ndarray, salt: int) -> pa.Array:
    """Distinct ints -> distinct 8-character hex strings like Criteo's (``'68fd1e64'``), vectorised."""
    mixed = ((values.astype(np.uint64) * _GOLDEN + np.uint64(salt)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    digits = np.empty((values.size, 8), dtype=np.uint8)
    for position in range(8):
        digits[:, 7 - position] = _HEX[(mixed >> np.uint32(4 * position)) & np.uint32(15)]
    return pa.array(digits.view("S8").ravel()).cast(pa.string())


def write_criteo_tsv(table: pa.Table, path: str | Path) -> Path:
    """Write ``label, I1..I13, C1..C26`` tab-separated without header; missing values are empty.

    ``table`` is a :func:`generate_synthetic` table with 13 numerical and 26 categorical fields
    (e.g. the ``criteo_like`` preset); numbers are written as integers, categories as hex tokens.
    """
    missing = [c for c in ["label", *CRITEO_NUMERICAL, *CRITEO_CATEGORICAL] if c not in table.column_names]
    if missing:
        raise ValueError(f"a Criteo TSV needs label, I1..I13 and C1..C26; the table lacks {missing}")
    columns = {"label": pc.cast(table.column("label"), pa.int64())}
    for name in CRITEO_NUMERICAL:
        columns[name] = pc.cast(pc.floor(pc.cast(table.column(name), pa.float64())), pa.int64())
    for salt, name in enumerate(CRITEO_CATEGORICAL):
        column = table.column(name)
        tokens = hex_tokens(pc.fill_null(column, 0).to_numpy(), salt)
        columns[name] = pc.if_else(pc.is_valid(column), tokens, pa.scalar(None, pa.string()))
    path = Path(path)
    options = pcsv.WriteOptions(include_header=False, delimiter="\t", quoting_style="none")
    pcsv.write_csv(pa.table(columns), path, write_options=options)
    return path
