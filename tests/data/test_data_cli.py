"""`crossadapt data ...` through typer's CliRunner on the sub-app."""

import json

import pytest

from data_sources import criteo_line, write_lines
from typer.testing import CliRunner

from crossadapt.cli.data import app
from crossadapt.data import PreparedDataset

runner = CliRunner()


def test_help_is_there_for_newcomers():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "prepare" in result.output and "fetch-movielens" in result.output
    result = runner.invoke(app, ["prepare", "--help"])
    assert result.exit_code == 0 and "--on-bad-rows" in result.output and "--min-count" in result.output


def test_prepare_synthetic_prints_a_summary(tmp_path):
    out = tmp_path / "small"
    result = runner.invoke(app, ["prepare", "--format", "synthetic", "--preset", "small", "--rows", "4000", "--seed", "2",
                                 "--split", "2:2:1:1", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    ds = PreparedDataset.open(out)
    assert ds.manifest.splits == {"hist": 1333, "train": 1334, "online": 666, "test": 667}  # cumulative rounding
    assert ds.manifest.preprocessing.min_count == 10 and ds.manifest.source.detail["seed"] == 2
    for text in ("hist", "1,333", "C8", "rows/s", "CTR"):
        assert text in result.output
    again = runner.invoke(app, ["prepare", "--format", "synthetic", "--preset", "small", "--rows", "100", "--out", str(out)])
    assert again.exit_code == 2 and "exists" in again.output


def test_prepare_criteo_bad_rows_error_then_skip(tmp_path):
    lines = [criteo_line(i % 2, [i] * 13, [f"v{i % 4}"] * 26) for i in range(30)]
    lines[6] = criteo_line(0, [1, 2, 3, "oops"] + [1] * 9, ["a"] * 26)
    path = write_lines(tmp_path / "train.txt", lines)
    result = runner.invoke(app, ["prepare", "-f", "criteo", "-i", str(path), "-o", str(tmp_path / "a")])
    assert result.exit_code == 2
    assert "line 7" in result.output and "I4" in result.output and "train.txt" in result.output
    assert not (tmp_path / "a").exists()
    result = runner.invoke(app, ["prepare", "-f", "criteo", "-i", str(path), "-o", str(tmp_path / "b"),
                                 "--on-bad-rows", "skip", "--min-count", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "b" / "dataset.json").read_text())
    assert manifest["source"]["bad_rows"]["skipped"] == 1 and manifest["preprocessing"]["min_count"] == 2
    assert "1 bad rows skipped" in result.output


def test_prepare_csv_needs_a_schema_and_uses_it(tmp_path):
    path = write_lines(tmp_path / "log.csv", ["t,u,x,y"] + [f"{i},u{i % 3},{i},{i % 2}" for i in range(20)])
    result = runner.invoke(app, ["prepare", "-f", "csv", "-i", str(path), "-o", str(tmp_path / "a")])
    assert result.exit_code != 0 and "--schema" in result.output
    (tmp_path / "s.json").write_text(json.dumps({"label": "y", "timestamp": "t", "categorical": ["u"], "numerical": ["x"], "user_id": "u"}))
    result = runner.invoke(app, ["prepare", "-f", "csv", "-i", str(path), "--schema", str(tmp_path / "s.json"), "-o", str(tmp_path / "a")])
    assert result.exit_code == 0, result.output
    assert PreparedDataset.open(tmp_path / "a").feature_spec.categorical[0].vocab_size == 4
    result = runner.invoke(app, ["prepare", "-f", "criteo", "-o", str(tmp_path / "c")])
    assert result.exit_code != 0 and "--input" in result.output


def test_append_and_info(tmp_path):
    lines = [criteo_line(i % 2, [i] * 13, [f"v{i % 4}"] * 26) for i in range(40)]
    path = write_lines(tmp_path / "day1.txt", lines)
    assert runner.invoke(app, ["prepare", "-f", "criteo", "-i", str(path), "-o", str(tmp_path / "ds"), "--min-count", "1"]).exit_code == 0
    day2 = write_lines(tmp_path / "day2.txt", [criteo_line(1, [5] * 13, ["v1"] * 26), criteo_line(0, [5] * 13, ["new"] * 26)])
    result = runner.invoke(app, ["append", "-d", str(tmp_path / "ds"), "-n", "day2", "-f", "criteo", "-i", str(day2)])
    assert result.exit_code == 0, result.output
    part = PreparedDataset.open(tmp_path / "ds").split("day2")
    assert part.categorical[1, 0] == 0 and part.categorical[0, 0] > 0
    result = runner.invoke(app, ["info", str(tmp_path / "ds")])
    assert result.exit_code == 0 and "day2" in result.output
    assert runner.invoke(app, ["info", str(tmp_path)]).exit_code == 2


def test_fetch_movielens_reports_a_bad_wheel(tmp_path):
    import zipfile

    wheel = tmp_path / "recbole.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name in ("ml-100k.inter", "ml-100k.user", "ml-100k.item"):
            archive.writestr(f"recbole/dataset_example/ml-100k/{name}", "x\n")
    result = runner.invoke(app, ["fetch-movielens", "--out", str(tmp_path / "ml"), "--wheel", str(wheel)])
    assert result.exit_code == 2 and "sha256" in result.output


def test_data_bench_runs_end_to_end(tmp_path):
    from crossadapt.bench.data import run_data_bench

    result = run_data_bench(rows=3_000, seed=1, workdir=tmp_path, isolate=False)
    assert result["rows"] == 3_000 and result["seconds"] > 0 and result["peak_rss_mb"] > 10
    # seconds is reported to the millisecond, so a fast run carries up to 0.5 ms of rounding in the product.
    assert result["rows_per_s"] * result["seconds"] == pytest.approx(3_000, rel=0.02 + 0.0005 / result["seconds"])
    assert list(tmp_path.iterdir()) == []  # its temporary files are gone


def test_prepare_day_files_gzip_quiet_and_append_with_growth(tmp_path):
    from data_sources import gzip_copy

    days = []
    for day in range(3):
        lines = [criteo_line(i % 2, [i, "", 3] + [1] * 10, [f"d{day}v{i % 3}", f"v{i % 4}"] + ["x"] * 24) for i in range(30)]
        path = write_lines(tmp_path / f"day_{day}.txt", lines)
        days.append(gzip_copy(path, tmp_path / f"day_{day}.gz") if day == 1 else path)
    args = ["prepare", "-f", "criteo", "-o", str(tmp_path / "ds"), "--min-count", "1", "--quiet"]
    result = runner.invoke(app, args + [x for p in days for x in ("-i", str(p))])
    assert result.exit_code == 0, result.output
    assert result.output == ""  # --quiet: nothing on success
    ds = PreparedDataset.open(tmp_path / "ds")
    assert sum(ds.manifest.splits.values()) == 90 and ds.manifest.missing_indicator_fields == ["I2"]
    assert ds.feature_spec.numerical[-1] == "I2__missing"
    day3 = write_lines(tmp_path / "day_3.txt", [criteo_line(1, [5] * 13, ["brand_new"] + ["x"] * 25)] * 4)
    result = runner.invoke(app, ["append", "-d", str(tmp_path / "ds"), "-n", "day3", "-f", "criteo", "-i", str(day3),
                                 "--grow", "--grow-min-count", "4", "--grow-field", "C2=100"])  # fmt: skip
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "vocabulary grown to version 2" in output and "rows/s" in output
    grown = PreparedDataset.open(tmp_path / "ds")
    assert grown.vocabulary.values("C1").to_pylist()[-1] == "brand_new" and grown.manifest.vocab_version == 2
    bad = runner.invoke(app, ["append", "-d", str(tmp_path / "ds"), "-n", "day4", "-f", "criteo", "-i", str(day3),
                              "--grow", "--grow-field", "C2"])  # fmt: skip
    assert bad.exit_code == 2 and "FIELD=N" in bad.output


def test_prepare_shows_progress_on_stderr(tmp_path):
    lines = [criteo_line(i % 2, [i] * 13, [f"v{i % 4}"] * 26) for i in range(50)]
    path = write_lines(tmp_path / "train.txt", lines)
    result = runner.invoke(app, ["prepare", "-f", "criteo", "-i", str(path), "-o", str(tmp_path / "ds"), "--min-count", "1"])
    assert result.exit_code == 0, result.output
    assert "reading" in result.output and "writing" in result.output and "50 rows" in result.output
