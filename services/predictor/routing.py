"""The sticky A/B split: which arm serves a row, from a hash of its cohort key.

    bucket(key) = fmix64(h(FNV-1a-64(salt), str(key))) mod 10000      (h: the seeded hash of hashing.py)
    student     ⇔ bucket(key) < round(student_weight · 10000)

A cohort (a user) keeps its bucket while the salt is fixed, so it stays in one arm while the
weight is fixed, and raising the weight only moves cohorts from teacher to student. Integer keys
hash as their decimal text, so `123` and `"123"` are the same cohort. A batch is hashed with a
fixed number of numpy calls; the MurmurHash3 finaliser spreads the bits before the modulo. A batch of
at most `SCALAR_ROWS` keys (batch-1 serving) is hashed by the one-key form in plain Python: the same
numbers, without a few tens of array calls whose fixed cost outweighs a handful of bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from services.common.errors import InvalidArgumentError
from services.predictor.hashing import (
    as_large_string,
    fmix64,
    fmix64_int,
    reference_hash,
    seeded_hash,
    text_seed,
)

BUCKETS = 10_000
SCALAR_ROWS = 8  # batches up to this many keys are hashed in plain Python (same buckets, fewer calls)


def cohort_buckets(keys: pa.Array, salt: str) -> np.ndarray:
    """``[n]`` int32 buckets in [0, 10000) of cohort keys (text or integers, no nulls)."""
    if len(keys) <= SCALAR_ROWS:
        return scalar_buckets(keys, salt)
    return vector_buckets(keys, salt)


def vector_buckets(keys: pa.Array, salt: str) -> np.ndarray:
    """`cohort_buckets` with array calls (any batch size)."""
    return (fmix64(seeded_hash(keys, text_seed(salt))) % np.uint64(BUCKETS)).astype(np.int32)


def scalar_buckets(keys: pa.Array, salt: str) -> np.ndarray:
    """`cohort_buckets` key by key in plain Python (for small batches)."""
    seed = text_seed(salt)
    return np.array([fmix64_int(reference_hash(seed, key)) % BUCKETS for key in as_large_string(keys).to_pylist()],
                    dtype=np.int32)


def reference_bucket(key: str | int, salt: str) -> int:
    """The bucket of one key in plain Python (the specification; tests compare the batch form with it)."""
    hashed = np.array([reference_hash(text_seed(salt), str(key))], dtype=np.uint64)
    return int(fmix64(hashed)[0] % np.uint64(BUCKETS))


def student_threshold(weight: float) -> int:
    """Buckets below this go to the student."""
    return int(round(weight * BUCKETS))


@dataclass(frozen=True)
class Split:
    """The student's share of cohorts and the salt of their hash."""

    student_weight: float = 0.0
    salt: str = ""

    def __post_init__(self) -> None:
        if not (0.0 <= self.student_weight <= 1.0):  # also refuses NaN
            raise InvalidArgumentError(f"student_weight must lie in [0, 1], got {self.student_weight}",
                                       field="split.student_weight")
        if len(self.salt) > 256:
            raise InvalidArgumentError("salt is longer than 256 characters", field="split.salt")

    def to_student(self, buckets: np.ndarray) -> np.ndarray:
        """``[n]`` bool: the rows of these buckets that the student serves."""
        return buckets < student_threshold(self.student_weight)

    def assign(self, keys: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(buckets [n] int32, to_student [n] bool) of cohort keys."""
        buckets = cohort_buckets(keys, self.salt)
        return buckets, self.to_student(buckets)
