"""Two synthetic CTR domains that share their users and differ in items and base rates (cross-domain transfer).

The setting of the cross-domain warm start (:mod:`crossadapt.transfer.warm_start`; the related paper's
natural-content source domain and sparser advertising target): a rich **source** domain (many rows, its
own items, a higher click rate) and a sparse **target** domain (few rows, other items, a lower click rate)
over the SAME users. A user's taste in the target is correlated with her taste in the source
(``preference_correlation``), so what a model learnt about a user from the source helps in the target;
the items share nothing.

Click model of a row (user ``u``, item ``i``, context ``c`` of hour and device) in domain ``d``::

    logit = b_d + β_u + β_i + β_c + s · ⟨v_u^d, w_i⟩,   v_u^tgt = ρ v_u^src + √(1 − ρ²) ε_u

with ``β_u`` the user's bias (shared by the domains, scaled by ρ in the target likewise), ``w_i`` item
vectors drawn per domain, and ``b_d`` solved so each domain's mean click probability is its base rate.

Rows come in time order: every source row first, then the target's. Prepared with
:func:`prepare_two_domain`, the **hist** split is the source domain and **train / online / test** are the
target's (hist : train : online : test = source share : 60 : 20 : 20 of the target), so the teacher of a
switch (trained on hist ∪ train) has seen both domains, Scratch only the target, and a warm start reads
the source from hist. Categorical ids: ``user`` 1..users, ``item`` source items 1..S and target items
S+1..S+T (disjoint), ``hour`` and ``device``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from crossadapt.data.prepared import PreparedDataset
    from crossadapt.data.schema import DatasetSchema

__all__ = ["TwoDomainConfig", "TWO_DOMAIN_PRESET", "generate_two_domain", "two_domain_schema", "prepare_two_domain",
           "open_two_domain"]

#: The name `crossadapt bench paper` settings (and `prepare_synthetic`) use for this generator.
TWO_DOMAIN_PRESET = "two_domain"
#: The target domain's rows split train : online : test.
TARGET_SPLIT = (0.6, 0.2, 0.2)


class TwoDomainConfig(BaseModel):
    """Sizes and effects of the two domains (defaults: a 70% source, 10% vs 3% click rates)."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(60_000, ge=1_000, description="Rows over both domains.")
    source_share: float = Field(0.7, gt=0.0, lt=1.0, description="Share of the rows in the source domain.")
    users: int = Field(2_000, ge=2)
    source_items: int = Field(400, ge=2)
    target_items: int = Field(200, ge=2)
    latent_dim: int = Field(4, ge=1)
    source_rate: float = Field(0.10, gt=0.0, lt=1.0, description="Mean click probability in the source.")
    target_rate: float = Field(0.03, gt=0.0, lt=1.0, description="Mean click probability in the target.")
    preference_correlation: float = Field(0.8, ge=0.0, le=1.0, description="ρ of a user's taste across domains.")
    user_bias_std: float = Field(0.8, ge=0.0)
    item_bias_std: float = Field(0.5, ge=0.0)
    interaction_scale: float = Field(0.8, ge=0.0, description="s: weight of the user-item affinity.")
    user_zipf: float = Field(0.8, ge=0.0, description="Exponent of the users' activity (0: uniform).")
    seed: int = 0

    @property
    def source_rows(self) -> int:
        return int(round(self.rows * self.source_share))

    @property
    def split(self) -> tuple[float, float, float, float]:
        """hist : train : online : test with hist = the source domain (its rows exactly, up to rounding)."""
        target = 1.0 - self.source_share
        return (self.source_share, *(target * part for part in TARGET_SPLIT))  # type: ignore[return-value]


def _zipf_probabilities(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    weights = 1.0 / np.arange(1, n + 1) ** exponent
    weights = weights[rng.permutation(n)]  # activity unrelated to the id
    return weights / weights.sum()


def _bias_for_rate(logits: np.ndarray, rate: float) -> float:
    """The constant ``b`` with ``mean σ(logits + b) = rate`` (bisection; the mean is monotone in ``b``)."""
    low, high = -30.0, 30.0
    for _ in range(80):
        mid = (low + high) / 2
        if np.mean(1.0 / (1.0 + np.exp(-(logits + mid)))) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def generate_two_domain(config: TwoDomainConfig) -> pa.Table:
    """Rows in time order (source, then target): ``timestamp, label, prob, domain, user, item, hour, device``."""
    rng = np.random.default_rng(config.seed)
    rho, dim = config.preference_correlation, config.latent_dim
    user_source = rng.standard_normal((config.users, dim)) / np.sqrt(dim)
    user_target = rho * user_source + np.sqrt(1 - rho**2) * rng.standard_normal((config.users, dim)) / np.sqrt(dim)
    user_bias_source = rng.normal(0.0, config.user_bias_std, config.users)
    user_bias_target = rho * user_bias_source + np.sqrt(1 - rho**2) * rng.normal(0.0, config.user_bias_std, config.users)
    activity = _zipf_probabilities(config.users, config.user_zipf, rng)
    hour_effect, device_effect = rng.normal(0.0, 0.3, 24), rng.normal(0.0, 0.3, 4)
    parts = []
    domains = ((config.source_rows, config.source_items, 0, user_source, user_bias_source, config.source_rate),
               (config.rows - config.source_rows, config.target_items, config.source_items, user_target,
                user_bias_target, config.target_rate))
    for domain, (n, items, item_offset, user_vectors, user_bias, rate) in enumerate(domains):
        item_vectors = rng.standard_normal((items, dim))
        item_bias = rng.normal(0.0, config.item_bias_std, items)
        user = rng.choice(config.users, n, p=activity)
        item = rng.integers(0, items, n)
        hour, device = rng.integers(0, 24, n), rng.integers(0, 4, n)
        logits = (user_bias[user] + item_bias[item] + hour_effect[hour] + device_effect[device]
                  + config.interaction_scale * np.einsum("nd,nd->n", user_vectors[user], item_vectors[item]))
        prob = 1.0 / (1.0 + np.exp(-(logits + _bias_for_rate(logits, rate))))
        parts.append({"domain": np.full(n, domain), "user": user + 1, "item": item + item_offset + 1,
                      "hour": hour, "device": device, "prob": prob, "label": rng.random(n) < prob})
    columns = {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}
    return pa.table({
        "timestamp": pa.array(np.arange(config.rows, dtype=np.int64)),
        "label": pa.array(columns["label"].astype(np.int8)),
        "prob": pa.array(columns["prob"].astype(np.float32)),
        "domain": pa.array(columns["domain"].astype(np.int8)),
        **{name: pa.array(columns[name].astype(np.int32)) for name in ("user", "item", "hour", "device")},
    })


def two_domain_schema() -> "DatasetSchema":
    """The columns' roles; ``domain`` is kept out of the features (it is constant within each split)."""
    from crossadapt.data.schema import DatasetSchema

    return DatasetSchema(label="label", timestamp="timestamp", prob="prob", categorical=["user", "item", "hour", "device"],
                         user_id="user")


def prepare_two_domain(config: TwoDomainConfig, out: Path, *, overwrite: bool = True) -> "PreparedDataset":
    """Generate and prepare the two domains at ``out``: hist = source, train / online / test = target.

    Every value seen in hist ∪ train gets its id (``min_count`` 1): a target item seen only in its online
    or test rows reads as ``<UNK>``, as a new item does in production."""
    from crossadapt.data.prepare import prepare_dataset
    from crossadapt.data.schema import PrepareConfig

    return prepare_dataset(generate_two_domain(config), out, schema=two_domain_schema(),
                           config=PrepareConfig(min_count=1, split=config.split), overwrite=overwrite)


def open_two_domain(root: Path, rows: int, seed: int) -> "PreparedDataset":
    """The default two domains of ``rows`` rows and ``seed`` under ``root`` (``two_domain-<rows>-s<seed>``),
    prepared the first time and opened afterwards (as the bench caches its synthetic settings)."""
    from crossadapt.data.prepared import PreparedDataset

    folder = Path(root) / f"{TWO_DOMAIN_PRESET}-{rows}-s{seed}"
    if (folder / "dataset.json").is_file():
        return PreparedDataset.open(folder)
    return prepare_two_domain(TwoDomainConfig(rows=rows, seed=seed), folder)
