import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossadapt.data import (
    DataFormatError, DatasetSchema, PrepareConfig, Vocabulary, prepare_dataset, read_avazu, read_criteo, read_csv,
    read_movielens_100k, read_parquet,
)  # fmt: skip
from crossadapt.data.columns import stable_hash64

from data_sources import AVAZU_HEADER, avazu_line, write_lines, write_movielens

ALL_IN_ONE_SPLIT = PrepareConfig(min_count=1, split="1:0:0:0")


def test_criteo_reader_columns_missing_values_and_order(criteo_file, tmp_path):
    raw = read_criteo(criteo_file)
    assert raw.table.num_rows == 10
    assert raw.schema.numerical == [f"I{i}" for i in range(1, 14)] and len(raw.schema.categorical) == 26
    assert raw.table.column("I2").null_count == 10  # empty numeric field -> missing
    assert raw.table.column("C2").null_count == 10  # empty categorical field -> missing
    ds = prepare_dataset(criteo_file, tmp_path / "ds", source_format="criteo", config=ALL_IN_ONE_SPLIT)
    hist = ds.split("hist")
    # no timestamp: file order is time order
    np.testing.assert_array_equal(hist.label, np.arange(10) % 2)
    np.testing.assert_allclose(hist.numerical[:, 0], [0, 1, 2, np.log2(3), 2, np.log2(5), np.log2(6), np.log2(7), 3, np.log2(9)], rtol=1e-6)
    assert np.all(hist.numerical[:, 1] == 0)  # missing -> 0
    vocab = ds.vocabulary
    assert vocab.decode("C2", hist.categorical[:1, 1]) == ["<MISSING>"]
    assert sorted(vocab.decode("C1", hist.categorical[:, 0])) == sorted(f"v{i % 3}" for i in range(10))


def test_avazu_reader_time_from_hour_and_sorted(tmp_path):
    lines = [AVAZU_HEADER, avazu_line(1, 1, 14102105, site="late"), avazu_line(2, 0, 14102100, site="early"),
             avazu_line(3, 0, 14102223, site="later")]  # fmt: skip
    path = write_lines(tmp_path / "train.csv", lines)
    raw = read_avazu(path)
    assert raw.schema.label == "click" and raw.schema.user_id == "device_ip"
    assert len(raw.schema.categorical) == 22 and "hour_of_day" in raw.schema.categorical
    stamps = dict(zip(raw.table.column("site_id").to_pylist(), raw.table.column("timestamp").to_pylist()))
    assert stamps["early"] == 1413849600  # 2014-10-21 00:00 UTC
    assert stamps["late"] == 1413849600 + 5 * 3600
    assert stamps["later"] == 1413849600 + 86400 + 23 * 3600
    ds = prepare_dataset(path, tmp_path / "ds", source_format="avazu", config=ALL_IN_ONE_SPLIT)
    hist = ds.split("hist")
    assert list(hist.timestamp) == sorted(stamps.values())
    site = ds.schema.categorical.index("site_id")
    assert ds.vocabulary.decode("site_id", hist.categorical[:, site]) == ["early", "late", "later"]
    hour = ds.schema.categorical.index("hour_of_day")
    assert ds.vocabulary.decode("hour_of_day", hist.categorical[:, hour]) == ["0", "5", "23"]
    assert np.all(hist.user == stable_hash64(pa.array(["ip1"]))[0])


def test_generic_csv_with_schema_file_iso_times_and_string_users(tmp_path):
    (tmp_path / "schema.yaml").write_text(
        "label: click\nconversion: buy\ntimestamp: when\nuser_id: user\ncategorical: [user, city]\nnumerical: [price]\n"
    )
    schema = DatasetSchema.from_file(tmp_path / "schema.yaml")
    path = write_lines(tmp_path / "log.csv", [
        "when,user,city,price,click,buy,unused",
        "2024-01-02T00:00:00Z,alice,paris,10,1,1,x",
        "2024-01-01,bob,rome,,0,0,y",
        "2024-01-01 12:00,alice,,4,1,0,z",
    ])  # fmt: skip
    raw = read_csv(path, schema)
    assert "unused" not in raw.table.column_names
    ds = prepare_dataset(raw, tmp_path / "ds", config=ALL_IN_ONE_SPLIT)
    hist = ds.split("hist")
    np.testing.assert_array_equal(hist.timestamp, [1704067200, 1704067200 + 12 * 3600, 1704153600])
    np.testing.assert_array_equal(hist.label, [0, 1, 1])
    np.testing.assert_array_equal(hist.conversion, [0, 0, 1])
    np.testing.assert_allclose(hist.numerical[:, 0], [0, 2, np.log2(10)])
    assert hist.user[1] == hist.user[2] != hist.user[0]
    assert ds.vocabulary.decode("city", hist.categorical[:, 1]) == ["rome", "<MISSING>", "paris"]


def test_generic_csv_keeps_integer_user_ids(tmp_path):
    schema = DatasetSchema(label="y", categorical=["u"], user_id="u")
    path = write_lines(tmp_path / "a.csv", ["u,y", "17,1", "42,0"])
    ds = prepare_dataset(path, tmp_path / "ds", source_format="csv", schema=schema, config=ALL_IN_ONE_SPLIT)
    np.testing.assert_array_equal(ds.split("hist").user, [17, 42])


def test_parquet_folder_with_schema(tmp_path):
    folder = tmp_path / "parts"
    folder.mkdir()
    pq.write_table(pa.table({"t": [3, 4], "c": ["a", "b"], "x": [1.0, None], "y": [1, 0]}), folder / "h1.parquet")
    pq.write_table(pa.table({"t": [1, 2], "c": ["b", None], "x": [8.0, 2.0], "y": [0, 0]}), folder / "h0.parquet")
    schema = DatasetSchema(label="y", timestamp="t", categorical=["c"], numerical=["x"])
    raw = read_parquet(folder, schema)
    assert raw.table.num_rows == 4
    ds = prepare_dataset(raw, tmp_path / "ds", config=ALL_IN_ONE_SPLIT)
    hist = ds.split("hist")
    np.testing.assert_array_equal(hist.timestamp, [1, 2, 3, 4])
    np.testing.assert_allclose(hist.numerical[:, 0], [3, 2, 1, 0])
    assert ds.vocabulary.decode("c", hist.categorical[:, 0]) == ["b", "<MISSING>", "a", "b"]


def test_unknown_schema_column_is_named(tmp_path):
    schema = DatasetSchema(label="y", categorical=["c", "ghost"])
    path = write_lines(tmp_path / "a.csv", ["c,y", "a,1"])
    with pytest.raises(DataFormatError, match="ghost") as info:
        read_csv(path, schema)
    assert info.value.column == "ghost" and info.value.path == str(path)
    pq.write_table(pa.table({"c": ["a"], "y": [1]}), tmp_path / "a.parquet")
    with pytest.raises(DataFormatError, match="ghost"):
        read_parquet(tmp_path / "a.parquet", schema)
    with pytest.raises(DataFormatError, match="ghost"):
        prepare_dataset(pa.table({"c": ["a"], "y": [1]}), tmp_path / "ds", schema=schema)


def test_movielens_reader_on_fake_atomic_files(tmp_path):
    folder = write_movielens(tmp_path / "ml")
    raw = read_movielens_100k(folder)
    schema = raw.schema
    assert schema.label == "click" and schema.user_id == "user_id" and "genre" in schema.categorical
    ds = prepare_dataset(raw, tmp_path / "ds", config=ALL_IN_ONE_SPLIT)
    hist = ds.split("hist")
    # sorted by time; ties (t=100) keep file order: (2,10,3) then (2,12,4)
    np.testing.assert_array_equal(hist.timestamp, [100, 100, 200, 300, 400, 500])
    np.testing.assert_array_equal(hist.label, [0, 1, 1, 1, 0, 0])  # rating >= 4 is a click
    np.testing.assert_array_equal(hist.user, [2, 2, 1, 1, 3, 3])
    col = {f: i for i, f in enumerate(schema.categorical)}
    vocab = ds.vocabulary
    assert vocab.decode("item_id", hist.categorical[:, col["item_id"]]) == ["10", "12", "11", "10", "12", "10"]
    assert vocab.decode("gender", hist.categorical[:, col["gender"]]) == ["F", "F", "M", "M", "M", "M"]
    assert vocab.decode("genre", hist.categorical[:, col["genre"]])[:3] == ["Animation", "Thriller", "Action"]
    assert vocab.decode("genres", hist.categorical[:1, col["genres"]]) == ["Animation Children's Comedy"]
    assert vocab.decode("occupation", hist.categorical[4:5, col["occupation"]]) == ["writer"]


def test_movielens_unknown_user_gets_missing_features(tmp_path):
    folder = write_movielens(tmp_path / "ml", ratings=[(1, 10, 5, 1), (9, 10, 4, 2)])
    ds = prepare_dataset(read_movielens_100k(folder), tmp_path / "ds", config=ALL_IN_ONE_SPLIT)
    age = ds.schema.categorical.index("age")
    assert ds.vocabulary.decode("age", ds.split("hist").categorical[:, age]) == ["24", "<MISSING>"]


def test_vocabulary_load_checks_hash(tmp_path, criteo_file):
    ds = prepare_dataset(criteo_file, tmp_path / "ds", source_format="criteo", config=ALL_IN_ONE_SPLIT)
    index = tmp_path / "ds" / "vocab" / "index.json"
    index.write_text(index.read_text().replace(ds.vocab_hash, "0" * 64))
    with pytest.raises(ValueError, match="hash"):
        Vocabulary.load(tmp_path / "ds")
