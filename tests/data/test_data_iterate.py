"""SplitArrays and iter_batches: every row exactly once, right dtypes, no surprises."""

import numpy as np
import pytest
import torch

from crossadapt.data import DatasetSchema, PrepareConfig, SplitArrays, iter_batches, prepare_dataset, synthetic_preset


def arrays(n: int = 1003, with_optional: bool = True) -> SplitArrays:
    rows = np.arange(n)
    return SplitArrays(
        categorical=np.stack([rows, rows * 2], axis=1).astype(np.int32),
        numerical=np.stack([rows, -rows, rows * 0.5], axis=1).astype(np.float32),
        label=(rows % 2).astype(np.float32),
        timestamp=rows.astype(np.int64) if with_optional else None,
        user=(rows % 7).astype(np.int64) if with_optional else None,
    )


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 64, 100, 1003, 5000])
def test_every_row_exactly_once(shuffle, batch_size):
    data = arrays()
    batches = list(iter_batches(data, batch_size, shuffle=shuffle, seed=3))
    seen = torch.cat([b.timestamp for b in batches]).numpy()
    assert np.array_equal(np.sort(seen), np.arange(1003))
    assert all(len(b) == batch_size for b in batches[:-1]) and 0 < len(batches[-1]) <= batch_size
    if not shuffle:
        assert np.array_equal(seen, np.arange(1003))
    for b in batches:  # rows stay intact: every column of a row moves together
        assert torch.equal(b.categorical[:, 1], 2 * b.timestamp) and torch.equal(b.numerical[:, 1], -b.timestamp.float())
        assert torch.equal(b.label, (b.timestamp % 2).float())


def test_shuffle_is_seeded_and_chunked_gathers_cover_all(monkeypatch):
    import crossadapt.data.iterate as iterate

    monkeypatch.setattr(iterate, "SHUFFLE_CHUNK_ROWS", 128)  # several chunks, not a multiple of the batch
    data = arrays()
    order = lambda seed: torch.cat([b.timestamp for b in iter_batches(data, 50, shuffle=True, seed=seed)]).numpy()
    assert np.array_equal(order(1), order(1)) and not np.array_equal(order(1), order(2))
    assert not np.array_equal(order(1), np.arange(1003))
    assert np.array_equal(np.sort(order(1)), np.arange(1003))


def test_drop_last():
    data = arrays()
    for shuffle in (False, True):
        batches = list(iter_batches(data, 100, shuffle=shuffle, drop_last=True))
        assert [len(b) for b in batches] == [100] * 10
        assert len(set(torch.cat([b.timestamp for b in batches]).tolist())) == 1000
    with pytest.raises(ValueError):
        list(iter_batches(data, 0))


def test_batch_dtypes_from_a_prepared_dataset(tmp_path):
    ds = prepare_dataset(synthetic_preset("small", rows=3_000), tmp_path / "ds")
    train = ds.split("train")
    batch = next(iter_batches(train, 256))
    assert batch.categorical.dtype == torch.int64 and batch.categorical.shape == (256, 8)
    assert batch.numerical.dtype == torch.float32 and batch.numerical.shape == (256, 3)
    assert batch.label.dtype == torch.float32 and batch.conversion.dtype == torch.float32
    assert batch.timestamp.dtype == torch.int64 and batch.user.dtype == torch.int64
    assert batch.prob.dtype == torch.float32 and batch.teacher_logit is None
    sizes = torch.tensor([f.vocab_size for f in ds.feature_spec.categorical])
    assert bool((batch.categorical >= 0).all()) and bool((batch.categorical < sizes).all())
    np.testing.assert_array_equal(batch.numerical.numpy(), train.numerical[:256])


def test_split_arrays_methods():
    data = arrays(10)
    assert len(data) == 10 and data.num_categorical == 2 and data.num_numerical == 3
    taken = data.take(np.array([9, 0, 9]))
    np.testing.assert_array_equal(taken.timestamp, [9, 0, 9])
    assert not isinstance(taken.categorical, np.memmap)
    sliced = data.slice(2, 5)
    np.testing.assert_array_equal(sliced.user, [2, 3, 4])
    assert np.shares_memory(sliced.categorical, data.categorical)
    with_logits = data.with_teacher_logit(np.arange(10, dtype=np.float64))
    assert with_logits.teacher_logit.dtype == np.float32 and data.teacher_logit is None
    with pytest.raises(ValueError, match="teacher logits"):
        data.with_teacher_logit(np.zeros(3))
    both = SplitArrays.concat([with_logits, arrays(4, with_optional=False)])
    assert len(both) == 14 and both.timestamp is None and both.teacher_logit is None
    batch = with_logits.to_batch()
    assert batch.teacher_logit.dtype == torch.float32 and len(batch) == 10
    with pytest.raises(ValueError, match="rows"):
        SplitArrays(np.zeros((3, 1), np.int32), np.zeros((3, 0), np.float32), np.zeros(2, np.float32))


def test_batches_from_memory_map_do_not_touch_the_files(tmp_path):
    schema = DatasetSchema(label="y", categorical=["c"], numerical=["x"])
    import pyarrow as pa

    ds = prepare_dataset(pa.table({"c": ["a", "b"] * 8, "x": [1.0] * 16, "y": [0, 1] * 8}), tmp_path / "ds",
                         schema=schema, config=PrepareConfig(min_count=1, split="1:0:0:0"))  # fmt: skip
    batch = next(iter_batches(ds.split("hist"), 16))
    batch.numerical.mul_(100)  # a training loop scribbling on its input
    assert float(ds.split("hist").numerical.max()) == 1.0
