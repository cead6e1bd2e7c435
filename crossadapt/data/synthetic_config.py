"""``SyntheticConfig``: the fixed parameters of the synthetic click log, and its presets.

The generator (:mod:`crossadapt.data.synthetic`) draws rows in time order from a known model::

    logit(row) = bias
               + sum_f  w_f^s[v_f]                               first order (per-value weights)
               + sum_{(i,j) in pairs} <u_i^s[v_i], u_j^s[v_j]>   latent pairwise interactions
               + sum_n  g_n^s(t_n)                               numerical effects (t_n standardised)
    prob = sigmoid(logit);  label ~ Bernoulli(prob)

``s`` is the stable stretch a row falls in (the shift points cut the time axis) and ``v_f`` field
f's value, drawn from a Zipf law over the field's values. Fields differ in importance; a value's
weight and latent vector also fade with its popularity rank, so most of the signal sits on values
seen often enough to learn from 10^5-10^6 rows. At every shift point:

- covariate shift: a share of each field's head values jump in popularity and the head is re-ranked;
- concept shift: every head value's weight and latent vector move part way to a fresh draw, and
  the numerical effects turn.

Long-tail values per large field are frequent only in the early period (hist) and carry strong
effects; later they stay rare (a few occurrences each in train) but together still touch ~10 % of
test rows, so a model that saw hist (the teacher) knows something a student trained from scratch
on train cannot learn. ``prob`` is written with every row, so the Bayes-optimal AUC of any split is
the AUC of ``prob`` on its labels.

``early_return`` brings the early values back at full ``early_mass`` later on (the ``long_history``
preset: present in hist, absent from D_train, back from the online split): the teacher's history then
holds values that the student's D_train lacks and the test period still shows.

Conversions (pCVR) happen only after a click, with their own probability
``sigmoid(bias_c + rho * first_order + sqrt(1 - rho^2) * own_first_order)``.

Measured on the presets (seeds 0-2; test split unless said):

==================== ======= ========== ================================================
preset               rows    base CTR   Bayes AUC
==================== ======= ========== ================================================
criteo_like          1M      0.22       0.78-0.80 (train/online/test); hist 0.86 (early values)
small                30k     0.22       0.79-0.81 over all rows; 0.76-0.83 per split
strong_interactions  500k    0.20       0.82-0.84; interaction term std ~1.45 vs first order ~0.6
==================== ======= ========== ================================================
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class SyntheticConfig(BaseModel):
    """Parameters of a synthetic click log (every field documented; unknown keys rejected)."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(200_000, ge=1, description="Rows to generate, in time order.")
    seed: int = Field(0, description="Everything is a deterministic function of (config, seed).")
    cardinalities: list[int] = Field(
        description="Distinct values per categorical field C1..Cn (>= 2 each); spread them (10 ... 10^6)."
    )
    num_numerical: int = Field(0, ge=0, description="Numerical fields I1..In: count-like integers >= 0.")
    user_field: int | Literal["largest"] | None = Field(
        "largest", description="Index of the categorical field that doubles as user id; 'largest': the highest-cardinality one; None: no user column."
    )
    zipf_exponent: float = Field(
        1.1, gt=0, description="Value popularity p(rank r) ~ (r + 1)^-a per field: larger = more head-heavy."
    )
    base_ctr: float = Field(0.22, gt=0, lt=1, description="Mean click probability; the bias is solved for it.")
    first_order_scale: float = Field(
        0.8, ge=0, description="Std (logits) of the summed first-order term, shared among fields by importance."
    )
    field_importance_spread: float = Field(
        1.0, ge=0, description="Fields differ in importance: field f's share ~ exp(spread * z_f)^2 with z_f ~ N(0, 1); 0 = equal shares."
    )
    interaction_pairs: int = Field(10, ge=0, description="Field pairs with a latent interaction <u_i, u_j>.")
    interaction_max_cardinality: int = Field(
        20_000, ge=2, description="Only fields with at most this many values take part in pairs (so pairs are learnable)."
    )
    latent_dim: int = Field(4, ge=1, description="Width k of the latent interaction vectors.")
    interaction_scale: float = Field(
        0.6, ge=0, description="Std (logits) of the summed interaction term; each pair gets scale / sqrt(pairs)."
    )
    effect_head: int = Field(
        1000, ge=1, description="Effects fade with popularity rank r as 1 / sqrt(1 + r / effect_head): rare values matter less."
    )
    numerical_scale: float = Field(0.7, ge=0, description="Std (logits) of the summed numerical term.")
    numerical_missing_rate: float = Field(0.1, ge=0, lt=1, description="Share of numerical values left empty.")
    shift_points: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.7, 0.85],
        description="Where distribution shifts happen, as fractions of the time axis (strictly increasing, in (0, 1)).",
    )
    popularity_shift: float = Field(
        0.3, ge=0, le=1, description="At each shift, this share of each field's head values move in log-rank by N(0, 1) (about e-fold more or less popular) and the head is re-ranked (covariate shift)."
    )
    concept_drift: float = Field(
        0.05, ge=0, le=1, description="At each shift, every head value's weight and latent vector become sqrt(1 - d) * old + sqrt(d) * fresh, and each numerical effect turns by pi * d * N(0, 1) (concept shift)."
    )
    shift_head: int = Field(1000, ge=1, description="The head: a field's top-ranked values, where shifts act.")
    early_values: int = Field(
        400, ge=0, description="Per large field, long-tail values that are frequent only in the early period."
    )
    early_min_cardinality: int = Field(1000, ge=2, description="Fields with fewer values get no early values.")
    early_mass: float = Field(0.08, ge=0, lt=1, description="Share of a large field's draws that are early values, early on.")
    early_end: float = Field(0.4, gt=0, le=1, description="End of the early period (fraction of time; 0.4 = end of hist at 4:4:1:1).")
    early_residual: float = Field(
        0.08, ge=0, le=1, description="After early_end, early values keep this fraction of early_mass (rare, not gone)."
    )
    early_effect_scale: float = Field(1.5, ge=0, description="Std (logits) of an early value's first-order weight.")
    early_return: float | None = Field(
        None, gt=0, lt=1,
        description="From this fraction of time on, early values are drawn at early_mass again (returning users, "
        "seasonal items), with the effects they had early. None: they stay at early_residual to the end.",
    )
    conversion_rate: float = Field(0.1, gt=0, lt=1, description="Mean P(conversion | click); its bias is solved for it.")
    conversion_correlation: float = Field(
        0.5, ge=-1, le=1, description="rho: how much the conversion effects follow the click effects."
    )
    start_time: int = Field(1_704_067_200, description="Epoch seconds of the first row (2024-01-01 UTC).")
    duration_seconds: int = Field(7 * 86_400, ge=1, description="Time span of all rows (evenly spaced).")

    @field_validator("cardinalities")
    @classmethod
    def _check_cardinalities(cls, value: list[int]) -> list[int]:
        if not value or any(k < 2 for k in value):
            raise ValueError("need at least one categorical field, each with >= 2 values")
        return value

    @field_validator("shift_points")
    @classmethod
    def _check_shifts(cls, value: list[float]) -> list[float]:
        if any(not 0 < p < 1 for p in value) or any(b <= a for a, b in zip(value, value[1:])):
            raise ValueError("shift_points must be strictly increasing fractions in (0, 1)")
        return value

    @model_validator(mode="after")
    def _check_user_field(self) -> "SyntheticConfig":
        if isinstance(self.user_field, int) and not 0 <= self.user_field < len(self.cardinalities):
            raise ValueError(f"user_field {self.user_field} is not a categorical field index")
        if self.early_return is not None and self.early_return <= self.early_end:
            raise ValueError(f"early_return ({self.early_return}) must come after early_end ({self.early_end})")
        return self

    @property
    def categorical_names(self) -> list[str]:
        return [f"C{i + 1}" for i in range(len(self.cardinalities))]

    @property
    def numerical_names(self) -> list[str]:
        return [f"I{i + 1}" for i in range(self.num_numerical)]

    @property
    def user_field_index(self) -> int | None:
        if self.user_field == "largest":
            return max(range(len(self.cardinalities)), key=lambda i: self.cardinalities[i])
        return self.user_field


#: Criteo-shaped cardinalities (Criteo's own, capped at 10^6 and floored at 10); C3 is the user.
CRITEO_LIKE_CARDINALITIES = [
    1460, 583, 1_000_000, 400_000, 305, 24, 12_517, 633, 10, 93_145, 5_683, 800_000, 3_194,
    27, 14_992, 600_000, 10, 5_652, 2_173, 12, 700_000, 18, 15, 286_181, 105, 142_572,
]  # fmt: skip


def _criteo_like(**overrides) -> SyntheticConfig:
    """13 numerical + 26 categorical fields (10 ... 10^6 values), CTR ~0.22, Bayes AUC ~0.78-0.80."""
    base = dict(rows=1_000_000, cardinalities=CRITEO_LIKE_CARDINALITIES, num_numerical=13, base_ctr=0.22)
    return SyntheticConfig(**(base | overrides))


def _small(**overrides) -> SyntheticConfig:
    """For fast tests: 8 categorical (5 ... 5000 values) + 3 numerical fields, 30k rows."""
    base = dict(
        rows=30_000, cardinalities=[5, 10, 30, 100, 300, 1000, 2000, 5000], num_numerical=3,
        interaction_pairs=4, early_values=8, early_min_cardinality=1000, shift_head=200, early_mass=0.15,
    )  # fmt: skip
    return SyntheticConfig(**(base | overrides))


def _strong_interactions(**overrides) -> SyntheticConfig:
    """Pairwise latent interactions dominate (an MLP underfits dot products; FiBiNET/DCNv2 can win).

    16 pairs among the fields with <= 1000 values. Measured at 500k rows (train on hist+train+online,
    test AUC after 2 epochs): MLP 0.671, MLP + FM term 0.700; Bayes 0.826.
    """
    base = dict(
        rows=500_000, cardinalities=[20, 30, 50, 80, 100, 150, 200, 300, 500, 800, 1000, 2000, 3000, 5000, 10_000, 50_000],
        num_numerical=4, base_ctr=0.2, first_order_scale=0.4, interaction_pairs=16, latent_dim=4,
        interaction_scale=1.5, numerical_scale=0.3, interaction_max_cardinality=1000, early_mass=0.03,
        early_effect_scale=1.0,
    )  # fmt: skip
    return SyntheticConfig(**(base | overrides))


#: hist : train : online : test of the ``long_history`` preset: a history 6x as long as D_train.
LONG_HISTORY_SPLIT = (12.0, 2.0, 1.0, 1.0)


def _long_history(**overrides) -> SyntheticConfig:
    """The paper's production setting in small: a long history (hist 75% of the rows, D_train 12.5%) whose
    teacher knows values the student's D_train never shows, and that still matter later.

    The `small` preset's fields and effects, with 40 early values per field of >= 1000 values (three
    fields), drawn at 12% of those fields' draws during hist, absent from D_train (``early_residual``
    0), and back at 12% from the start of the online split (``early_return`` 14/16) with the effects they
    had in hist. Prepare it with the split ``LONG_HISTORY_SPLIT`` (12:2:1:1; ``preset_split``): the early
    period and the return are placed on its boundaries. The same rows for every method; nothing looks at
    the test split but the scoring.
    """
    base = dict(
        rows=400_000, cardinalities=[5, 10, 30, 100, 300, 1000, 2000, 5000], num_numerical=3,
        interaction_pairs=4, shift_head=200, early_values=40, early_min_cardinality=1000, early_mass=0.12,
        early_residual=0.0, **split_periods("long_history", LONG_HISTORY_SPLIT),
    )  # fmt: skip
    return SyntheticConfig(**(base | overrides))


def split_periods(name: str, split: tuple[float, float, float, float]) -> dict[str, float]:
    """A preset's periods placed on the boundaries of another hist : train : online : test split.

    Only ``long_history`` ties its periods to the split (the early period is hist, the return starts the
    online split); it exists to ask how the comparison moves with the split (e.g. the paper's D_train :
    D_online of 4:1 instead of 2:1), with the same generator otherwise.
    """
    if name != "long_history":
        raise ValueError(f"preset {name!r} does not place its periods on a split; only 'long_history' does")
    if len(split) != 4 or any(not part > 0 for part in split):
        raise ValueError(f"a split is four positive ratios hist:train:online:test, got {split}")
    total = sum(split)
    return {"early_end": split[0] / total, "early_return": (split[0] + split[1]) / total}


PRESETS = {"criteo_like": _criteo_like, "small": _small, "strong_interactions": _strong_interactions,
           "long_history": _long_history}
#: Presets whose periods are placed on another split than the default 4:4:1:1.
PRESET_SPLITS: dict[str, tuple[float, float, float, float]] = {"long_history": LONG_HISTORY_SPLIT}


def preset_split(name: str) -> tuple[float, float, float, float]:
    """hist : train : online : test ratios a preset's periods are placed on (4:4:1:1 unless it says)."""
    return PRESET_SPLITS.get(name, (4.0, 4.0, 1.0, 1.0))


def synthetic_preset(name: str, **overrides) -> SyntheticConfig:
    """A named preset (``criteo_like``, ``small``, ``strong_interactions``, ``long_history``), optionally with overrides
    such as ``rows=200_000`` or ``seed=1``."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    return PRESETS[name](**overrides)
