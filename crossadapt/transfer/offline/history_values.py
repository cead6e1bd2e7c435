"""History-value rows: show the student the values its teacher learned from history that its own data lacks.

The teacher was trained on hist ∪ D_train; the student trains on a sample of D_train and the stream. A value
that was frequent in hist and is rare in D_train (a returning user, a seasonal item) has a projected
embedding row in the student (the teacher's knowledge of it), but the student's interaction network never
sees that row in a training batch, so the student cannot read it, and the KD term (computed on D_train rows)
never mentions it. Full-Retrain sees those values in hist; Scratch and the sample do not.

The teacher's vocabulary keeps, per field, how often each value occurred in the data the teacher was built
from (`Vocabulary.counts`), the one trace of hist that outlives the data. Per field f:

    deficit_f(v) = max(p_T,f(v) − p_D,f(v), 0)

with p_T the vocabulary's frequencies and p_D the frequencies in D_train: the probability mass the teacher's
data gave values that D_train does not give them. A history-value row copies a row of the offline sample and
replaces one field's value: the field is drawn in proportion to its deficit mass Σ_v deficit_f(v) and the value
from deficit_f. Its label is the teacher's probability (a soft label, as Eq. 9's unclicked rows), and its KD
target the teacher's logit, so the student learns the teacher's reading of those values in context.

Everything is vectorised over rows and values (numpy); no teacher call happens here (the caller labels).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays, Vocabulary
    from crossadapt.models import FeatureSpec

__all__ = ["ValueDeficits", "value_deficits", "history_value_rows", "label_with_teacher", "vocabulary_counts"]


@dataclass(frozen=True)
class ValueDeficits:
    """Per categorical field: the deficit distribution over ids (``probabilities[f]`` sums to 1, or is all 0)
    and its mass (how much of the teacher's data went to values D_train under-shows)."""

    probabilities: tuple[np.ndarray, ...]  # [V_f] float64 each; id 0 (<UNK>) is always 0
    mass: np.ndarray  # [F] float64, in [0, 1]

    @property
    def total_mass(self) -> float:
        return float(self.mass.sum())


def vocabulary_counts(vocabulary: "Vocabulary", spec: "FeatureSpec") -> tuple[np.ndarray, ...]:
    """Per categorical field of ``spec``, the vocabulary's counts by id (``[vocab_size]``, 0 at <UNK>; a table
    larger than the vocabulary's field gets 0 for the extra ids, a smaller one keeps its own ids' counts)."""
    counts = []
    for field in spec.categorical:
        by_id = np.zeros(field.vocab_size, dtype=np.int64)
        known = np.asarray(vocabulary.counts(field.name), dtype=np.int64)[: field.vocab_size - 1]
        by_id[1: 1 + len(known)] = known
        counts.append(by_id)
    return tuple(counts)


def value_deficits(teacher_counts: Sequence[np.ndarray], train_categorical: np.ndarray) -> ValueDeficits:
    """Deficits of each field's values in ``train_categorical`` ``[n, F]`` ids against the teacher's data.

    ``teacher_counts[f]`` ``[V_f]``: occurrences of each id of field f in the teacher's data, by id (entry 0,
    <UNK>, is ignored). Ids of D_train beyond a field's counts (a grown vocabulary) count for D_train only.
    """
    categorical = np.asarray(train_categorical)
    if categorical.ndim != 2 or categorical.shape[1] != len(teacher_counts):
        raise ValueError(f"train_categorical must be [n, {len(teacher_counts)}], got {categorical.shape}")
    rows = max(categorical.shape[0], 1)
    probabilities, mass = [], []
    for field, counts in enumerate(teacher_counts):
        counts = np.asarray(counts, dtype=np.float64).copy()
        if counts.ndim != 1 or (counts < 0).any() or not np.isfinite(counts).all():
            raise ValueError(f"teacher_counts[{field}] must be 1-D finite counts >= 0")
        counts[:1] = 0.0
        total = counts.sum()
        if total <= 0:
            probabilities.append(np.zeros(len(counts)))
            mass.append(0.0)
            continue
        seen = np.bincount(categorical[:, field], minlength=len(counts))[: len(counts)] / rows
        deficit = np.maximum(counts / total - seen, 0.0)
        deficit[0] = 0.0
        field_mass = float(deficit.sum())
        probabilities.append(deficit / field_mass if field_mass > 0 else deficit)
        mass.append(field_mass)
    return ValueDeficits(tuple(probabilities), np.asarray(mass, dtype=np.float64))


def history_value_rows(base: "SplitArrays", deficits: ValueDeficits, rows: int,
                       rng: np.random.Generator) -> "SplitArrays":
    """``rows`` copies of uniformly drawn ``base`` rows, each with one field's value drawn from the deficits.

    Labels and KD targets are left as the base rows' (the caller replaces them with the teacher's: see
    :func:`label_with_teacher`). Empty when ``rows`` is 0, ``base`` is empty or no field has a deficit.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    if rows == 0 or len(base) == 0 or deficits.total_mass <= 0:
        return base.take(np.zeros(0, dtype=np.int64))
    if len(deficits.probabilities) != base.num_categorical:
        raise ValueError(f"deficits cover {len(deficits.probabilities)} fields, the rows have {base.num_categorical}")
    picked = base.take(rng.integers(0, len(base), size=rows))
    field = rng.choice(len(deficits.mass), size=rows, p=deficits.mass / deficits.total_mass)
    categorical = picked.categorical.copy()
    for f in np.flatnonzero(deficits.mass > 0):  # one draw per field, for all of its rows at once
        at = np.flatnonzero(field == f)
        if len(at):
            cumulative = np.cumsum(deficits.probabilities[f])
            values = np.searchsorted(cumulative, rng.random(len(at)) * cumulative[-1], side="right")
            categorical[at, f] = np.minimum(values, len(cumulative) - 1)
    return replace(picked, categorical=categorical.astype(picked.categorical.dtype, copy=False))


def label_with_teacher(rows: "SplitArrays", teacher_logits: np.ndarray, target: str = "click",
                       label_logit_shift: float = 0.0) -> "SplitArrays":
    """The rows with the teacher's probability as their label (``conversion`` for target 'conversion') and
    its logit as their KD target.

    ``label_logit_shift``: the offline BCE's `task_logit_shift` (prior correction of a class-balanced
    sample). The BCE fits ``σ(z + shift)`` to the labels, so the soft label is ``σ(logit + shift)``: the
    student's own logit ``z`` is then fitted to the teacher's, at the data's base rate, as on sample rows."""
    logits = np.asarray(teacher_logits, dtype=np.float32)
    if logits.shape != (len(rows),) or not np.isfinite(logits).all():
        raise ValueError(f"teacher_logits must be {len(rows)} finite logits, got shape {logits.shape}")
    probability = (1.0 / (1.0 + np.exp(-(logits.astype(np.float64) + label_logit_shift)))).astype(np.float32)
    if target == "conversion":
        return replace(rows, conversion=probability, teacher_logit=logits)
    return replace(rows, label=probability, teacher_logit=logits)
