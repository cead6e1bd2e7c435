"""What a dataset's columns mean (``DatasetSchema``) and how it is prepared (``PrepareConfig``).

A schema file for the generic CSV/Parquet readers is this model as JSON or YAML, e.g.::

    label: click
    conversion: purchase        # optional, for pCVR
    timestamp: event_time       # optional; without it, file order is time order
    user_id: user               # optional, for GAUC and A/B cohorts
    categorical: [user, item, city]
    numerical: [price, age]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from crossadapt.data.errors import OnBadRows

#: The four time-ordered parts of every prepared dataset (paper, Sec. 2): the teacher trains on
#: hist + train, the student on train (+ online); test is the most recent period.
SPLIT_NAMES: tuple[str, str, str, str] = ("hist", "train", "online", "test")

#: The paper's rare-value thresholds (values seen fewer times in hist + train become ``<UNK>``).
DEFAULT_MIN_COUNT: dict[str, int] = {
    "criteo": 10,
    "avazu": 5,
    "movielens-100k": 2,
    "synthetic": 10,
    "csv": 1,
    "parquet": 1,
}

MissingIndicators = Literal["auto", "all", "none"]

#: Missing indicators per format when ``PrepareConfig.missing_indicators`` is None. The synthetic
#: generator's click model reads a missing count as 0 (``crossadapt.data.synthetic._numerical``), so an
#: indicator has nothing to learn there and would only change the benchmark models' shapes.
DEFAULT_MISSING_INDICATORS: dict[str, MissingIndicators] = {"synthetic": "none"}


class DatasetSchema(BaseModel):
    """The roles of a table's columns. Unknown keys are rejected so a typo cannot pass silently."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: str = Field("label", description="Click label column: 0/1 (soft labels in [0, 1] allowed).")
    conversion: str | None = Field(None, description="Conversion label (pCVR); 1 only where clicked.")
    timestamp: str | None = Field(
        None, description="Event time (integer seconds, or a date/time type). None: row order is time order."
    )
    categorical: list[str] = Field(default_factory=list, description="Categorical fields, in model order.")
    numerical: list[str] = Field(default_factory=list, description="Numerical fields, in model order.")
    user_id: str | None = Field(
        None, description="User key for GAUC and cohorts; may also be one of the categorical fields."
    )
    prob: str | None = Field(None, description="True click probability (synthetic data only).")

    @model_validator(mode="after")
    def _check_columns(self) -> "DatasetSchema":
        if not self.categorical and not self.numerical:
            raise ValueError("a schema needs at least one categorical or numerical field")
        roles = [self.label, *self.categorical, *self.numerical]
        roles += [c for c in (self.conversion, self.timestamp, self.prob) if c is not None]
        if any(not name for name in roles):
            raise ValueError("column names must be non-empty")
        seen: set[str] = set()
        for name in roles:
            if name in seen:
                raise ValueError(f"column {name!r} is given more than one role")
            seen.add(name)
        if self.user_id is not None and self.user_id in {self.label, self.conversion, self.timestamp, self.prob}:
            raise ValueError(f"user_id {self.user_id!r} cannot also be a label, timestamp or prob column")
        return self

    @property
    def columns(self) -> list[str]:
        """Every source column the schema reads, each once."""
        cols = [self.label, self.conversion, self.timestamp, self.prob, self.user_id]
        cols += self.categorical + self.numerical
        return list(dict.fromkeys(c for c in cols if c is not None))

    @classmethod
    def from_file(cls, path: str | Path) -> "DatasetSchema":
        """Load a schema from ``.json``, ``.yaml`` or ``.yml``."""
        path = Path(path)
        text = path.read_text()
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a schema file must hold a mapping, got {type(data).__name__}")
        return cls.model_validate(data)


class PrepareConfig(BaseModel):
    """How raw rows become model input; stored in the manifest so a dataset can be rebuilt.

    Preprocessing follows the paper (FuxiCTR's pipeline):

    - a categorical value seen fewer than ``min_count`` times in hist + train maps to ``<UNK>`` (id 0);
      a value never seen there (e.g. one that first appears in test) is ``<UNK>`` too;
    - a missing categorical value is the token ``<MISSING>``, counted like any other value
      (frequent: it gets its own id; rare: ``<UNK>``);
    - a numerical value x becomes ``log2(x)`` when ``x > 2`` (if ``log_transform``), else stays x;
      a missing (empty, null or NaN) numerical value becomes 0.0 *and*, with missing indicators, sets a
      0/1 indicator field ``<field>__missing`` (appended after the numerical fields, embedded like any
      numerical field: ``1 · v_missing``), so the model tells a missing value from a true 0, as CTR
      libraries do. ``missing_indicators``: ``auto`` adds one for each numerical field that has a missing
      value in the data being prepared (a dataset without missing values keeps exactly its old layout),
      ``all`` for every numerical field, ``none`` for none (the old behaviour: missing reads as 0).
      The chosen fields are stored in the manifest, so appended partitions get the same layout;
    - negative counts (Criteo's integer features are counts, yet the Kaggle and day files hold a few
      negative values, I2 down to -3, with no documented meaning): ``negative_numerical="keep"`` passes
      them through as values (log2 applies only above 2), as the reference CTR pipelines do;
      ``"missing"`` treats them as missing values;
    - rows are ordered by time (stable: equal times keep file order) and cut into
      hist : train : online : test by ``split``.
    """

    model_config = ConfigDict(extra="forbid")

    min_count: int = Field(10, ge=1, description="Values seen fewer times in hist + train become <UNK>.")
    min_count_per_field: dict[str, int] = Field(
        default_factory=dict, description="Per-field overrides of min_count."
    )
    split: tuple[float, float, float, float] = Field(
        (4.0, 4.0, 1.0, 1.0), description="hist : train : online : test ratios (or a '4:4:1:1' string)."
    )
    log_transform: bool = Field(True, description="x -> log2(x) for numerical x > 2.")
    missing_indicators: MissingIndicators | None = Field(
        None, description="Indicator fields for missing numerical values: auto, all or none (None: the "
        "format's default: none for synthetic data, auto otherwise)."
    )
    negative_numerical: Literal["keep", "missing"] = Field(
        "keep", description="Negative numerical values: keep them as values, or treat them as missing."
    )
    on_bad_rows: OnBadRows = Field("error", description="'error' stops at a bad row; 'skip' drops and counts it.")

    @field_validator("split", mode="before")
    @classmethod
    def _parse_split(cls, value: object) -> object:
        if isinstance(value, str):
            parts = value.split(":")
            if len(parts) != 4:
                raise ValueError(f"split {value!r} must have 4 parts hist:train:online:test")
            return tuple(float(p) for p in parts)
        return value

    @field_validator("split")
    @classmethod
    def _check_split(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(r < 0 for r in value) or sum(value) <= 0:
            raise ValueError(f"split ratios must be >= 0 with a positive sum, got {value}")
        return value

    @field_validator("min_count_per_field")
    @classmethod
    def _check_overrides(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if v < 1}
        if bad:
            raise ValueError(f"min_count_per_field values must be >= 1, got {bad}")
        return value

    def indicator_mode(self, source_format: str) -> MissingIndicators:
        if self.missing_indicators is not None:
            return self.missing_indicators
        return DEFAULT_MISSING_INDICATORS.get(source_format, "auto")

    def min_count_for(self, field: str) -> int:
        return self.min_count_per_field.get(field, self.min_count)

    def split_bounds(self, rows: int) -> dict[str, tuple[int, int]]:
        """``{split: (start, stop)}`` row ranges in time order; rounding is cumulative so they tile [0, rows)."""
        total = sum(self.split)
        cuts, acc = [0], 0.0
        for ratio in self.split:
            acc += ratio
            cuts.append(int(round(rows * acc / total)))
        cuts[-1] = rows
        return {name: (cuts[i], cuts[i + 1]) for i, name in enumerate(SPLIT_NAMES)}
