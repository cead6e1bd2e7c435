"""Each kind of bad input: an error naming file, line and column, or a counted skip."""

import json

import numpy as np
import pyarrow as pa
import pytest
from data_sources import AVAZU_HEADER, avazu_line, criteo_line, write_lines

from crossadapt.data import DataFormatError, DatasetSchema, PrepareConfig, prepare_dataset, read_avazu, read_criteo, read_csv

SKIP = PrepareConfig(min_count=1, split="1:0:0:0", on_bad_rows="skip")


def good(i: int) -> str:
    return criteo_line(i % 2, [i] * 13, [f"v{i}"] * 26)


def test_wrong_column_count_names_file_and_line(tmp_path):
    path = write_lines(tmp_path / "t.txt", [good(0), good(1), "1\t2\t3", good(3)])
    with pytest.raises(DataFormatError, match="expected 40 columns, got 3") as info:
        read_criteo(path)
    assert (info.value.path, info.value.line, info.value.column) == (str(path), 3, None)
    assert f"{path}, line 3" in str(info.value)


def test_non_numeric_value_names_line_and_column(tmp_path):
    bad = criteo_line(1, [1, 2, "abc"] + [4] * 10, ["x"] * 26)
    path = write_lines(tmp_path / "t.txt", [good(0), good(1), good(2), good(3), bad, good(5)])
    with pytest.raises(DataFormatError, match="abc") as info:
        read_criteo(path)
    assert (info.value.line, info.value.column) == (5, "I3")


def test_non_numeric_label_is_named(tmp_path):
    path = write_lines(tmp_path / "t.txt", [good(0), criteo_line("yes", [1] * 13, ["x"] * 26)])
    with pytest.raises(DataFormatError) as info:
        read_criteo(path)
    assert (info.value.line, info.value.column) == (2, "label")


def test_label_out_of_range_and_missing(tmp_path):
    path = write_lines(tmp_path / "t.txt", [good(0), good(1), criteo_line(2, [1] * 13, ["x"] * 26)])
    with pytest.raises(DataFormatError, match=r"outside \[0, 1\]") as info:
        read_criteo(path)
    assert (info.value.line, info.value.column) == (3, "label")
    path = write_lines(tmp_path / "u.txt", [good(0), criteo_line("", [1] * 13, ["x"] * 26)])
    with pytest.raises(DataFormatError, match="missing") as info:
        read_criteo(path)
    assert (info.value.line, info.value.column) == (2, "label")


def test_empty_file_and_header_only_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataFormatError, match="empty") as info:
        read_criteo(empty)
    assert info.value.path == str(empty)
    header_only = write_lines(tmp_path / "h.csv", [AVAZU_HEADER])
    with pytest.raises(DataFormatError, match="no data rows"):
        read_avazu(header_only)


def test_skip_mode_counts_every_kind_and_keeps_the_rest(tmp_path):
    lines = [good(0), "1\t2", good(2), criteo_line(0, ["x"] + [1] * 12, ["a"] * 26), good(4),
             criteo_line(7, [1] * 13, ["a"] * 26), criteo_line(1, [1] * 13, ["a"] * 25 + ["b\tc"]), good(7)]  # fmt: skip
    path = write_lines(tmp_path / "t.txt", lines)
    ds = prepare_dataset(path, tmp_path / "ds", source_format="criteo", config=SKIP)
    report = ds.manifest.source.bad_rows
    assert report.skipped == 4
    assert report.by_reason == {"wrong column count": 2, "not a number in I1": 1, "value outside [0, 1] (label)": 1}
    assert sorted(e.line for e in report.examples) == [2, 4, 6, 7]
    assert ds.manifest.splits["hist"] == 4
    np.testing.assert_allclose(ds.split("hist").numerical[:, 0], [0, 2, 2, np.log2(7)], rtol=1e-6)  # rows 1, 3, 5, 8
    # the report is in the manifest on disk
    on_disk = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert on_disk["source"]["bad_rows"]["skipped"] == 4


def test_skip_mode_line_numbers_after_dropped_rows(tmp_path):
    lines = [good(0), "bad", "bad", good(3), criteo_line(0, [1, "nan?"] + [1] * 11, ["a"] * 26)]
    path = write_lines(tmp_path / "t.txt", lines)
    raw = read_criteo(path, on_bad_rows="skip")
    assert raw.table.num_rows == 2
    assert [(e.line, e.column) for e in raw.source.bad_rows.examples] == [(2, None), (3, None), (5, "I2")]
    assert raw.source.bad_rows.examples[0].text == "bad"


def test_avazu_bad_hour(tmp_path):
    path = write_lines(tmp_path / "a.csv", [AVAZU_HEADER, avazu_line(1, 0, 14102100), avazu_line(2, 1, 14103125)])
    with pytest.raises(DataFormatError, match="YYMMDDHH") as info:
        read_avazu(path)
    assert (info.value.line, info.value.column) == (3, "hour")
    raw = read_avazu(path, on_bad_rows="skip")
    assert raw.table.num_rows == 1 and raw.source.bad_rows.skipped == 1


def test_csv_bad_time_and_infinite_number(tmp_path):
    schema = DatasetSchema(label="y", timestamp="t", categorical=["c"], numerical=["x"])
    path = write_lines(tmp_path / "a.csv", ["t,c,x,y", "1,a,1,0", "yesterday,b,2,1", "3,c,inf,1"])
    with pytest.raises(DataFormatError, match="not a time") as info:
        read_csv(path, schema)
    assert (info.value.line, info.value.column) == (3, "t")
    raw = read_csv(path, schema, on_bad_rows="skip")
    assert raw.table.num_rows == 1
    assert {(e.line, e.column) for e in raw.source.bad_rows.examples} == {(3, "t"), (4, "x")}


def test_in_memory_table_errors_name_the_row():
    schema = DatasetSchema(label="y", categorical=["c"])
    with pytest.raises(DataFormatError, match="row 1: value outside"):
        prepare_dataset(pa.table({"c": ["a", "b"], "y": [0, 3]}), "/nonexistent/never-written", schema=schema)
