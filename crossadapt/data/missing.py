"""Missing numerical values: which fields get an indicator, and the indicator columns.

A missing numerical value is stored as 0.0 in its own column (so ``numerical[:, j]`` keeps its meaning)
and, for a field with an indicator, as 1.0 in the indicator column ``<field>__missing``; indicator
columns follow the N value columns, in the order of the numerical fields. A model embeds an indicator
like any numerical field (``1 · v``), which is the learned missing-value embedding of CTR libraries.
"""

from __future__ import annotations

import numpy as np

from crossadapt.data.schema import DatasetSchema, MissingIndicators

MISSING_SUFFIX = "__missing"


def indicator_name(field: str) -> str:
    return field + MISSING_SUFFIX


def choose_indicator_fields(schema: DatasetSchema, missing_counts: np.ndarray, mode: MissingIndicators) -> list[str]:
    """Numerical fields that get an indicator: ``auto`` those with a missing value, ``all``, or ``none``.

    ``missing_counts[j]``: missing values of ``schema.numerical[j]`` in the data being prepared.
    """
    if mode == "none":
        return []
    chosen = [f for f, count in zip(schema.numerical, missing_counts) if mode == "all" or count > 0]
    taken = set(schema.columns)
    clashes = [indicator_name(f) for f in chosen if indicator_name(f) in taken]
    if clashes:
        raise ValueError(f"indicator field {clashes[0]!r} clashes with a column of that name; rename the column")
    return chosen


def numerical_feature_names(schema: DatasetSchema, indicator_fields: list[str]) -> tuple[str, ...]:
    """The model's numerical fields: the schema's, then one indicator per chosen field."""
    return tuple(schema.numerical) + tuple(indicator_name(f) for f in indicator_fields)


def indicator_columns(schema: DatasetSchema, missing: list[np.ndarray], indicator_fields: list[str]) -> list[np.ndarray]:
    """``[n]`` float32 0/1 columns, one per indicator field (``missing[j]``: bool mask of numerical field j)."""
    position = {f: j for j, f in enumerate(schema.numerical)}
    return [missing[position[f]].astype(np.float32) for f in indicator_fields]
