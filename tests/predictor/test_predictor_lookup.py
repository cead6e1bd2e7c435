"""The serving lookup gives exactly `Vocabulary.encode`'s ids: kept values, unknown values, nulls, integers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from crossadapt.data.vocabulary import MISSING_TOKEN, Vocabulary
from services.predictor.lookup import VocabularyIndex

# Up to 30 characters (up to 120 UTF-8 bytes): values of at most 16 bytes are matched by their words, longer
# ones also byte by byte.
values = st.lists(st.text(max_size=30), min_size=0, max_size=40, unique=True)


@settings(max_examples=60, deadline=None, database=None)
@given(first=values, second=values, queries=st.lists(st.one_of(st.text(max_size=30), st.none()), min_size=1,
                                                       max_size=50))
def test_lookup_equals_vocabulary_encode(first: list[str], second: list[str], queries: list[str | None]) -> None:
    vocabulary = Vocabulary({"a": pa.array(first, pa.string()), "b": pa.array(second, pa.string())})
    index = VocabularyIndex(vocabulary, ["a", "b"])
    known = (first + second)[: len(queries)]
    column_a = pa.array(queries, pa.string())
    column_b = pa.array((known + queries)[: len(queries)], pa.string())  # hits in b, some values of a
    ids = index.lookup([column_a, column_b])
    assert ids.tolist() == np.stack([vocabulary.encode("a", column_a), vocabulary.encode("b", column_b)], 1).tolist()


def test_a_value_of_another_field_is_unknown_and_integers_match_their_text() -> None:
    vocabulary = Vocabulary({"site": pa.array(["x", "y", MISSING_TOKEN]), "hour": pa.array([str(h) for h in range(24)])})
    index = VocabularyIndex(vocabulary, ["site", "hour"])
    ids = index.lookup([pa.array(["y", "7", None, "x"]), pa.array([7, 23, 99, 0])])
    assert ids.tolist() == [[2, 8], [0, 24], [3, 0], [1, 1]]  # "7" is an hour, not a site; null is <MISSING>


def test_a_large_vocabulary_has_no_collisions_and_probes_stay_short() -> None:
    rng = np.random.default_rng(3)
    fields = {f"C{i}": pa.array([f"{i}-{v}" for v in range(20_000)]) for i in range(5)}
    vocabulary = Vocabulary(fields)
    index = VocabularyIndex(vocabulary, list(fields))
    queries = [pa.array([f"{i}-{v}" for v in rng.integers(0, 25_000, 500)]) for i in range(5)]
    expected = np.stack([vocabulary.encode(f, q) for f, q in zip(fields, queries)], 1)
    assert (index.lookup(queries) == expected).all()
    assert len(index) == 100_000 and index._max_probes < 64


def test_long_values_that_share_their_first_16_bytes_are_told_apart() -> None:
    prefix = "p" * 16
    kept = [f"{prefix}{v}" for v in range(300)] + [prefix, prefix[:15]]
    vocabulary = Vocabulary({"f": pa.array(kept)})
    index = VocabularyIndex(vocabulary, ["f"])
    queries = pa.array(kept + [f"{prefix}{v}" for v in range(300, 330)] + [prefix + "0" * 3, prefix[:14]])
    ids = index.lookup([queries])[:, 0]
    assert ids.tolist() == vocabulary.encode("f", queries).tolist()
    assert ids[: len(kept)].tolist() == list(range(1, len(kept) + 1)) and not ids[len(kept):].any()
