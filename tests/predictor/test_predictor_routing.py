"""The sticky split: the batch hash equals its one-key specification; cohorts stay put; raising the weight only
moves cohorts from teacher to student; shares match the weight."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.common.errors import InvalidArgumentError
from services.predictor.hashing import (
    fmix64,
    fmix64_int,
    reference_hash,
    seeded_hash,
    text_seed,
)
from services.predictor.routing import (
    BUCKETS,
    SCALAR_ROWS,
    Split,
    cohort_buckets,
    reference_bucket,
    scalar_buckets,
    vector_buckets,
)

keys = st.lists(st.one_of(st.text(max_size=40), st.integers(min_value=-(2**63), max_value=2**63 - 1)),
                min_size=1, max_size=60)
salts = st.text(max_size=20)
weights = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=80, deadline=None, database=None)
@given(keys=keys, salt=salts)
def test_batch_buckets_equal_the_one_key_specification(keys: list, salt: str) -> None:
    batch = cohort_buckets(pa.array([str(k) for k in keys]), salt)
    assert batch.tolist() == [reference_bucket(k, salt) for k in keys]
    assert ((batch >= 0) & (batch < BUCKETS)).all()


@settings(max_examples=80, deadline=None, database=None)
@given(keys=keys, salt=salts)
def test_small_batches_hashed_in_python_get_the_array_buckets(keys: list, salt: str) -> None:
    """Batches of at most SCALAR_ROWS keys take the plain-Python path: the same buckets as the array path."""
    for array in (pa.array([str(k) for k in keys]), pa.array([str(k) for k in keys]).slice(1),
                  pa.array([k for k in keys if isinstance(k, int)], pa.int64())):
        assert scalar_buckets(array, salt).tolist() == vector_buckets(array, salt).tolist()
        assert scalar_buckets(array, salt).dtype == vector_buckets(array, salt).dtype
    small = pa.array([str(k) for k in keys[:SCALAR_ROWS]])
    assert cohort_buckets(small, salt).tolist() == [reference_bucket(k, salt) for k in keys[:SCALAR_ROWS]]


@given(value=st.integers(0, 2**64 - 1))
def test_the_python_finaliser_equals_the_array_one(value: int) -> None:
    assert fmix64_int(value) == int(fmix64(np.array([value], dtype=np.uint64))[0])


@settings(max_examples=50, deadline=None, database=None)
@given(values=st.lists(st.text(max_size=30), min_size=1, max_size=30), seed=st.integers(0, 2**64 - 1))
def test_seeded_hash_of_sliced_arrays_matches_the_reference(values: list[str], seed: int) -> None:
    array = pa.array(["prefix", *values, "suffix"]).slice(1, len(values))  # offsets that do not start at 0
    assert seeded_hash(array, seed).tolist() == [reference_hash(seed, v) for v in values]


@settings(max_examples=60, deadline=None, database=None)
@given(keys=keys, salt=salts, weight=weights)
def test_a_cohort_stays_in_its_arm_across_requests(keys: list, salt: str, weight: float) -> None:
    split = Split(weight, salt)
    text = [str(k) for k in keys]
    _, first = split.assign(pa.array(text))
    _, again = split.assign(pa.array(list(reversed(text))))  # another request, other order and batch
    assert first.tolist() == list(reversed(again.tolist()))
    ints = [k for k in keys if isinstance(k, int)]
    if ints:  # an integer key and its text are the same cohort
        assert split.assign(pa.array(ints))[1].tolist() == split.assign(pa.array([str(k) for k in ints]))[1].tolist()


@settings(max_examples=60, deadline=None, database=None)
@given(keys=keys, salt=salts, low=weights, high=weights)
def test_raising_the_weight_only_moves_cohorts_from_teacher_to_student(keys: list, salt: str, low: float,
                                                                       high: float) -> None:
    low, high = sorted((low, high))
    column = pa.array([str(k) for k in keys])
    _, before = Split(low, salt).assign(column)
    _, after = Split(high, salt).assign(column)
    assert not (before & ~after).any()  # nobody leaves the student
    assert Split(0.0, salt).assign(column)[1].sum() == 0
    assert Split(1.0, salt).assign(column)[1].all()


def test_the_student_share_follows_the_weight_and_the_salt_reshuffles() -> None:
    users = pa.array([f"user-{i}" for i in range(40_000)])
    for weight in (0.05, 0.25, 0.5):
        share = Split(weight, "rollout-1").assign(users)[1].mean()
        assert abs(share - weight) < 0.01, (weight, share)
    a = Split(0.5, "rollout-1").assign(users)[1]
    b = Split(0.5, "rollout-2").assign(users)[1]
    assert 0.4 < (a == b).mean() < 0.6  # another salt: an independent half


@pytest.mark.parametrize("weight", [-0.1, 1.5, float("nan")])
def test_a_weight_outside_0_1_is_invalid(weight: float) -> None:
    with pytest.raises(InvalidArgumentError) as caught:
        Split(weight, "s")
    assert caught.value.field == "split.student_weight"


def test_seeds_differ_by_text() -> None:
    assert text_seed("a") != text_seed("b") and text_seed("") == 0xCBF29CE484222325
    assert np.unique(cohort_buckets(pa.array(["x"] * 3 + ["y"]), "")).size == 2
