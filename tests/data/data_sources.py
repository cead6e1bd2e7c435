"""Helpers that write small source files in each format (no downloads); imported by tests/data."""

from __future__ import annotations

from pathlib import Path

CRITEO_COLUMNS = 40  # label, I1..I13, C1..C26


def criteo_line(label: int | str = 0, numbers: list | None = None, cats: list | None = None) -> str:
    numbers = numbers if numbers is not None else [i for i in range(13)]
    cats = cats if cats is not None else [f"c{i}" for i in range(26)]
    return "\t".join(str(x) for x in [label, *numbers, *cats])


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


AVAZU_HEADER = (
    "id,click,hour,C1,banner_pos,site_id,site_domain,site_category,app_id,app_domain,app_category,"
    "device_id,device_ip,device_model,device_type,device_conn_type,C14,C15,C16,C17,C18,C19,C20,C21"
)


def avazu_line(row_id: int, click: int, hour: str | int, site: str = "s1", ip: str = "ip1") -> str:
    values = [row_id, click, hour, 1005, 0, site, "dom", "cat", "app", "adom", "acat", "dev", ip, "model", 1, 0]
    values += [15706, 320, 50, 1722, 0, 35, -1, 79]
    return ",".join(str(v) for v in values)


def write_movielens(folder: Path, ratings: list[tuple[int, int, float, int]] | None = None) -> Path:
    """A tiny fake MovieLens-100k in RecBole's atomic format (typed headers, tab-separated)."""
    folder.mkdir(parents=True, exist_ok=True)
    ratings = ratings or [
        (1, 10, 5, 300), (2, 10, 3, 100), (1, 11, 4, 200), (3, 12, 1, 400), (2, 12, 4, 100), (3, 10, 2, 500),
    ]  # fmt: skip
    inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    inter += [f"{u}\t{i}\t{r}\t{t}" for u, i, r, t in ratings]
    users = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token",
             "1\t24\tM\ttechnician\t85711", "2\t53\tF\tother\t94043", "3\t23\tM\twriter\t32067"]  # fmt: skip
    items = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq",
             "10\tToy Story\t1995\tAnimation Children's Comedy", "11\tGoldenEye\t1995\tAction Adventure Thriller",
             "12\tFour Rooms\t1995\tThriller"]  # fmt: skip
    write_lines(folder / "ml-100k.inter", inter)
    write_lines(folder / "ml-100k.user", users)
    write_lines(folder / "ml-100k.item", items)
    return folder


def criteo_like_tsv(path: Path, rows: int, seed: int = 0) -> Path:
    """A Criteo-format TSV from the criteo_like generator (missing values, Zipf categories)."""
    from crossadapt.data import generate_synthetic, synthetic_preset, write_criteo_tsv

    return write_criteo_tsv(generate_synthetic(synthetic_preset("criteo_like", rows=rows, seed=seed)), path)


def gzip_copy(path: Path, target: Path) -> Path:
    import gzip
    import shutil

    with open(path, "rb") as source, gzip.open(target, "wb", compresslevel=1) as out:
        shutil.copyfileobj(source, out)
    return target


def assert_same_dataset(a, b) -> None:
    """Two prepared datasets hold the same splits, arrays, vocabulary and feature layout."""
    import numpy as np

    assert a.manifest.splits == b.manifest.splits
    assert a.vocab_hash == b.vocab_hash and a.feature_spec == b.feature_spec
    assert a.manifest.columns == b.manifest.columns
    assert a.manifest.missing_indicator_fields == b.manifest.missing_indicator_fields
    assert a.manifest.source.bad_rows.by_reason == b.manifest.source.bad_rows.by_reason
    for name in a.split_names:
        x, y = a.split(name), b.split(name)
        for column in a.manifest.columns:
            np.testing.assert_array_equal(getattr(x, column), getattr(y, column), err_msg=f"{name}.{column}")
        assert a.manifest.split_stats[name].rows == b.manifest.split_stats[name].rows
        assert abs(a.manifest.split_stats[name].click_rate - b.manifest.split_stats[name].click_rate) < 1e-6
