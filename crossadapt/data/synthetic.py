"""Generate a synthetic click log with known click probabilities (see ``synthetic_config``).

Everything is vectorised numpy; the loops run over fields, field pairs and time pieces only.
Each field draws from its own generator seeded by (seed, purpose, field), so the output is a
deterministic function of the config.

Symbols: ``n`` rows, ``K`` values in a field, ``k`` latent width.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from crossadapt.data.schema import DatasetSchema
from crossadapt.data.synthetic_config import SyntheticConfig

_PARAMS, _ROWS, _PAIRS, _NUMERIC, _LABELS, _IMPORTANCE = 1, 2, 3, 4, 5, 6


def synthetic_schema(config: SyntheticConfig) -> DatasetSchema:
    user = config.user_field_index
    return DatasetSchema(
        label="label", conversion="conversion", timestamp="timestamp", prob="prob",
        categorical=config.categorical_names, numerical=config.numerical_names,
        user_id=None if user is None else config.categorical_names[user],
    )  # fmt: skip


@dataclass
class _Piece:
    """Rows [start, stop) share one stable stretch ``stretch`` and one early/late regime."""

    start: int
    stop: int
    stretch: int
    early: bool
    returned: bool = False  # after early_return: early values are drawn at early_mass again


def _pieces(config: SyntheticConfig) -> list[_Piece]:
    n = config.rows
    back = config.early_return
    cuts = sorted({0.0, 1.0, config.early_end, *config.shift_points, *([] if back is None else [back])})
    pieces = []
    for a, b in zip(cuts, cuts[1:]):
        start, stop = int(round(a * n)), int(round(b * n))
        if stop > start:
            pieces.append(_Piece(start, stop, sum(p <= a for p in config.shift_points), a < config.early_end,
                                 back is not None and a >= back))
    return pieces


def zipf_ranks(u: np.ndarray, cardinality: int, exponent: float) -> np.ndarray:
    """Ranks in [0, K) with p(r) ~ (r + 1)^-a, by inverting the continuous power law on [1, K + 1)."""
    top = float(cardinality + 1)
    if abs(exponent - 1.0) < 1e-9:
        x = np.power(top, u)
    else:
        e = 1.0 - exponent
        x = np.power(1.0 + u * (top**e - 1.0), 1.0 / e)
    return np.minimum(x.astype(np.int64) - 1, cardinality - 1).astype(np.int32)


def field_scales(config: SyntheticConfig) -> np.ndarray:
    """``[F]`` std of each field's first-order term; their squares sum to ``first_order_scale^2``."""
    z = np.random.default_rng([config.seed, _IMPORTANCE]).standard_normal(len(config.cardinalities))
    share = np.exp(2 * config.field_importance_spread * z)
    return config.first_order_scale * np.sqrt(share / share.sum())


def rank_effect_scale(config: SyntheticConfig, cardinality: int) -> np.ndarray:
    """``[K]`` effect std per popularity rank: ``1 / sqrt(1 + r / effect_head)``, normalised so the
    row-weighted mean square is 1 (a field's term keeps the std its scale parameter says)."""
    ranks = np.arange(cardinality, dtype=np.float32)
    decay = 1.0 / (1.0 + ranks / np.float32(config.effect_head))
    popularity = np.power(ranks + 1.0, np.float32(-config.zipf_exponent))
    mean_square = float(popularity.astype(np.float64) @ decay / popularity.sum(dtype=np.float64))
    return np.sqrt(decay / np.float32(mean_square))


@dataclass
class FieldWorld:
    """One field's hidden state per stable stretch: rank->value map, weights, latent vectors."""

    ranks_to_values: list[np.ndarray]  # per stretch [K] int32
    weights: list[np.ndarray]  # per stretch [K] float32, indexed by value
    latent: list[np.ndarray] | None  # per stretch [K, k] float32, indexed by value
    conversion_weights: np.ndarray  # [K] float32
    early: np.ndarray  # [E] int32 values frequent only early


def field_world(config: SyntheticConfig, f: int, scale: float, has_latent: bool) -> FieldWorld:
    rng = np.random.default_rng([config.seed, _PARAMS, f])
    K, k = config.cardinalities[f], config.latent_dim
    perm = rng.permutation(K).astype(np.int32)
    by_value = np.empty(K, np.float32)  # effect std of each value, from its base popularity rank
    by_value[perm] = rank_effect_scale(config, K)
    weights = rng.standard_normal(K, dtype=np.float32) * np.float32(scale) * by_value
    latent = None
    if has_latent:
        latent = rng.standard_normal((K, k), dtype=np.float32) * np.float32(k**-0.25) * by_value[:, None]
    conversion = rng.standard_normal(K, dtype=np.float32) * np.float32(scale) * by_value
    early = np.zeros(0, np.int32)
    if K >= config.early_min_cardinality and config.early_values > 0:
        tail = np.arange(K // 2, K)
        early = perm[rng.choice(tail, size=min(config.early_values, tail.size), replace=False)]
        weights[early] = rng.normal(0.0, config.early_effect_scale, early.size)
    perms, weight_list, latent_list = [perm], [weights], [latent]
    head = min(K, config.shift_head)
    for _ in config.shift_points:
        perm = perm.copy()
        # Covariate shift: a share of the head jumps in log-rank (by ~e-fold), the head is re-ranked.
        log_rank = np.log1p(np.arange(head, dtype=np.float64))
        moved = rng.choice(head, size=int(round(config.popularity_shift * head)), replace=False)
        log_rank[moved] += rng.standard_normal(moved.size)
        perm[:head] = perm[:head][np.argsort(log_rank, kind="stable")]
        # Concept shift: every head value's effect moves part way to a fresh draw.
        head_values = perm[:head]
        keep, move = np.float32(np.sqrt(1 - config.concept_drift)), np.float32(np.sqrt(config.concept_drift))
        weights = weights.copy()
        fresh = rng.standard_normal(head, dtype=np.float32) * np.float32(scale) * by_value[head_values]
        weights[head_values] = keep * weights[head_values] + move * fresh
        if latent is not None:
            latent = latent.copy()
            fresh = rng.standard_normal((head, k), dtype=np.float32) * np.float32(k**-0.25) * by_value[head_values, None]
            latent[head_values] = keep * latent[head_values] + move * fresh
        perms.append(perm), weight_list.append(weights), latent_list.append(latent)
    return FieldWorld(perms, weight_list, latent_list if has_latent else None, conversion, early)


def _pick_pairs(config: SyntheticConfig) -> list[tuple[int, int]]:
    eligible = [f for f, K in enumerate(config.cardinalities) if K <= config.interaction_max_cardinality]
    candidates = [(i, j) for a, i in enumerate(eligible) for j in eligible[a + 1 :]]
    if not candidates or config.interaction_pairs == 0:
        return []
    rng = np.random.default_rng([config.seed, _PAIRS])
    chosen = rng.choice(len(candidates), size=min(config.interaction_pairs, len(candidates)), replace=False)
    return [candidates[c] for c in sorted(chosen)]


def _draw_field(config: SyntheticConfig, f: int, world: FieldWorld, pieces: list[_Piece]) -> np.ndarray:
    """``[n]`` int32 values of field f in time order."""
    rng = np.random.default_rng([config.seed, _ROWS, f])
    n = config.rows
    ranks = zipf_ranks(rng.random(n), config.cardinalities[f], config.zipf_exponent)
    values = np.empty(n, np.int32)
    for p in pieces:
        values[p.start : p.stop] = world.ranks_to_values[p.stretch][ranks[p.start : p.stop]]
    if world.early.size:
        hit, which = rng.random(n), rng.integers(0, world.early.size, n)
        for p in pieces:
            mass = config.early_mass * (1.0 if p.early or p.returned else config.early_residual)
            rows = p.start + np.flatnonzero(hit[p.start : p.stop] < mass)
            values[rows] = world.early[which[rows]]
    return values


def _numerical(config: SyntheticConfig, pieces: list[_Piece]) -> tuple[list[np.ndarray], np.ndarray]:
    """Count-like features (NaN = missing) and their logit effect ``[n]``.

    Field j's effect is ``s (cos phi_j t + sin phi_j (t^2 - 1) / sqrt 2)`` on its standardised
    transformed value t, so its std is s = numerical_scale / sqrt(m) whatever the angle phi_j,
    which each shift turns by ``pi * concept_drift * N(0, 1)``.
    """
    n, m = config.rows, config.num_numerical
    effect = np.zeros(n, np.float32)
    if m == 0:
        return [], effect
    params = np.random.default_rng([config.seed, _NUMERIC, 0])  # drawn first: independent of n
    mus, sigmas = params.uniform(0.5, 3.0, m), params.uniform(0.5, 1.5, m)
    turns = np.pi * config.concept_drift * params.standard_normal((len(config.shift_points), m))
    angles = np.cumsum(np.vstack([params.uniform(0, 2 * np.pi, m), turns]), axis=0)  # [stretch, m]
    scale = config.numerical_scale / np.sqrt(m)
    rng = np.random.default_rng([config.seed, _NUMERIC, 1])
    columns = []
    for j in range(m):
        z = rng.standard_normal(n, dtype=np.float32)
        counts = np.floor(np.exp(mus[j] + sigmas[j] * z))
        counts[rng.random(n, dtype=np.float32) < config.numerical_missing_rate] = np.nan
        t = np.where(counts > 2, np.log2(np.maximum(counts, 1)), np.nan_to_num(counts, nan=0.0))
        t = (t - t.mean()) / max(float(t.std()), 1e-6)
        for p in pieces:
            angle, seg = angles[p.stretch, j], t[p.start : p.stop]
            effect[p.start : p.stop] += scale * (np.cos(angle) * seg + np.sin(angle) * (seg * seg - 1) / np.sqrt(2))
        columns.append(counts.astype(np.float32))
    return columns, effect


def _solve_bias(logits: np.ndarray, target: float, weights: np.ndarray | None = None) -> float:
    """Bias b with mean(sigmoid(logits + b)) = target (weighted), by bisection on a row sample."""
    step = max(1, logits.size // 50_000)
    x = logits[::step].astype(np.float64)
    w = None if weights is None else weights[::step].astype(np.float64)
    lo, hi = -30.0, 30.0
    for _ in range(40):  # 60 / 2^40: far below any rate a test could see
        mid = 0.5 * (lo + hi)
        p = 1.0 / (1.0 + np.exp(-(x + mid)))
        mean = p.mean() if w is None else (p * w).sum() / w.sum()
        lo, hi = (mid, hi) if mean < target else (lo, mid)
    return 0.5 * (lo + hi)


@dataclass
class Simulation:
    """Everything drawn for a config (rows in time order): inputs, hidden state and logit terms."""

    config: SyntheticConfig
    pieces: list[_Piece]
    worlds: list[FieldWorld]
    pairs: list[tuple[int, int]]
    categorical: dict[str, np.ndarray]  # name -> [n] int32 values
    numerical: dict[str, np.ndarray]  # name -> [n] float32 counts, NaN = missing
    first_order: np.ndarray  # [n] float32 logit terms ...
    interaction: np.ndarray
    numeric_effect: np.ndarray
    prob: np.ndarray  # [n] float32 true P(click)
    conversion_prob: np.ndarray  # [n] float32 true P(conversion | click)
    label: np.ndarray  # [n] bool
    conversion: np.ndarray  # [n] bool


def simulate(config: SyntheticConfig) -> Simulation:
    """Draw all rows and keep the hidden state (for tests and analysis; the table drops it)."""
    n, fields = config.rows, len(config.cardinalities)
    pieces = _pieces(config)
    pairs = _pick_pairs(config)
    in_pairs = {f for pair in pairs for f in pair}
    scales = field_scales(config)
    click_first, conv_first = np.zeros(n, np.float32), np.zeros(n, np.float32)
    latent_rows: dict[int, np.ndarray] = {}
    categorical, worlds = {}, []
    for f, name in enumerate(config.categorical_names):
        world = field_world(config, f, float(scales[f]), f in in_pairs)
        worlds.append(world)
        values = _draw_field(config, f, world, pieces)
        categorical[name] = values
        for p in pieces:
            click_first[p.start : p.stop] += world.weights[p.stretch][values[p.start : p.stop]]
        conv_first += world.conversion_weights[values]
        if world.latent is not None:
            rows = np.empty((n, config.latent_dim), np.float32)
            for p in pieces:
                rows[p.start : p.stop] = world.latent[p.stretch][values[p.start : p.stop]]
            latent_rows[f] = rows
    interaction = np.zeros(n, np.float32)
    pair_scale = config.interaction_scale / np.sqrt(max(len(pairs), 1))
    for i, j in pairs:
        interaction += pair_scale * np.einsum("nk,nk->n", latent_rows[i], latent_rows[j])
    numerical, numeric_effect = _numerical(config, pieces)

    logit = click_first + interaction + numeric_effect
    prob = _sigmoid(logit + _solve_bias(logit, config.base_ctr))
    rho = config.conversion_correlation
    conv_logit = rho * click_first + np.sqrt(1 - rho * rho) * conv_first
    conv_prob = _sigmoid(conv_logit + _solve_bias(conv_logit, config.conversion_rate, prob))
    rng = np.random.default_rng([config.seed, _LABELS])
    label = rng.random(n, dtype=np.float32) < prob
    conversion = label & (rng.random(n, dtype=np.float32) < conv_prob)
    return Simulation(
        config, pieces, worlds, pairs, categorical, dict(zip(config.numerical_names, numerical)),
        click_first, interaction, numeric_effect, prob, conv_prob, label, conversion,
    )  # fmt: skip


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def generate_synthetic(config: SyntheticConfig) -> pa.Table:
    """Rows in time order: ``timestamp, label, conversion, prob, conversion_prob, I1.., C1..``.

    ``C*`` are int32 value ids (0..K-1), ``I*`` float32 counts with nulls for missing values,
    ``prob`` the true click probability, ``conversion_prob`` the true P(conversion | click).
    """
    sim = simulate(config)
    n = config.rows
    columns = {
        "timestamp": pa.array(config.start_time + (np.arange(n, dtype=np.int64) * config.duration_seconds) // n),
        "label": pa.array(sim.label.astype(np.int8)),
        "conversion": pa.array(sim.conversion.astype(np.int8)),
        "prob": pa.array(sim.prob),
        "conversion_prob": pa.array(sim.conversion_prob),
    }
    columns |= {name: pa.array(values, mask=np.isnan(values)) for name, values in sim.numerical.items()}
    columns |= {name: pa.array(values) for name, values in sim.categorical.items()}
    return pa.table(columns)
