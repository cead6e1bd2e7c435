"""The synthetic click log: deterministic, calibrated, with the shifts and the hist-only long tail it promises."""

import numpy as np
import pyarrow as pa
import pytest
from sklearn.metrics import roc_auc_score

from crossadapt.data import generate_synthetic, prepare_dataset, read_criteo, synthetic_preset, synthetic_schema, write_criteo_tsv
from crossadapt.data.synthetic import simulate


@pytest.fixture(scope="module")
def small_sim():
    return simulate(synthetic_preset("small", rows=40_000))


def js_divergence(a: np.ndarray, b: np.ndarray, k: int) -> float:
    p, q = np.bincount(a, minlength=k) / a.size, np.bincount(b, minlength=k) / b.size
    m = (p + q) / 2

    def kl(x, y):
        mask = x > 0
        return float(np.sum(x[mask] * np.log(x[mask] / y[mask])))

    return 0.5 * kl(p, m) + 0.5 * kl(q, m)


def test_deterministic_for_a_seed():
    config = synthetic_preset("small", rows=5_000)
    assert generate_synthetic(config).equals(generate_synthetic(config))
    other = generate_synthetic(synthetic_preset("small", rows=5_000, seed=1))
    assert not other.column("C4").equals(generate_synthetic(config).column("C4"))


def test_table_layout_and_schema():
    config = synthetic_preset("small", rows=2_000)
    table = generate_synthetic(config)
    assert table.column_names == ["timestamp", "label", "conversion", "prob", "conversion_prob", "I1", "I2", "I3",
                                  "C1", "C2", "C3", "C4", "C5", "C6", "C7", "C8"]  # fmt: skip
    stamps = table.column("timestamp").to_numpy()
    assert np.all(np.diff(stamps) >= 0) and stamps[0] == config.start_time
    assert stamps[-1] < config.start_time + config.duration_seconds
    for name, k in zip(config.categorical_names, config.cardinalities):
        values = table.column(name).to_numpy()
        assert values.min() >= 0 and values.max() < k
    assert 0.05 < table.column("I1").null_count / 2_000 < 0.15  # numerical_missing_rate 0.1
    schema = synthetic_schema(config)
    assert schema.user_id == "C8" and schema.prob == "prob" and schema.conversion == "conversion"


def test_prob_is_consistent_with_labels(small_sim):
    label, prob = small_sim.label, small_sim.prob.astype(np.float64)
    tolerance = 4 * np.sqrt(np.sum(prob * (1 - prob))) / prob.size
    assert abs(label.mean() - prob.mean()) < tolerance
    assert abs(prob.mean() - small_sim.config.base_ctr) < 0.005
    assert not np.any(small_sim.conversion & ~small_sim.label)  # conversions only after clicks
    conversion_rate = small_sim.conversion[label].mean()
    assert abs(conversion_rate - small_sim.config.conversion_rate) < 0.03
    assert 0.77 <= roc_auc_score(label, prob) <= 0.83  # small: Bayes AUC 0.79-0.81 over seeds


def test_criteo_like_bayes_auc_in_documented_range(tmp_path):
    ds = prepare_dataset(synthetic_preset("criteo_like", rows=200_000), tmp_path / "ds")
    spec = ds.feature_spec
    assert len(spec.categorical) == 26 and len(spec.numerical) == 13
    test = ds.split("test")
    assert 0.75 <= roc_auc_score(test.label, test.prob) <= 0.80
    assert 0.19 <= ds.manifest.split_stats["train"].click_rate <= 0.26
    assert 0.07 <= ds.manifest.split_stats["train"].conversion_rate <= 0.13  # per click; config says 0.1
    assert ds.schema.user_id == "C3" and test.user is not None and test.conversion is not None


def test_popularity_shifts_at_shift_points(small_sim):
    config, n = small_sim.config, small_sim.config.rows
    shift, window = int(config.shift_points[0] * n), int(0.1 * n)
    for name, k in [("C3", 30), ("C4", 100)]:
        values = small_sim.categorical[name]
        within = js_divergence(values[shift - 2 * window : shift - window], values[shift - window : shift], k)
        across = js_divergence(values[shift - window : shift], values[shift : shift + window], k)
        assert across > 4 * within, (name, within, across)


def test_concept_drift_moves_head_weights_part_way(small_sim):
    config = small_sim.config
    for world, k in zip(small_sim.worlds, config.cardinalities):
        head_values = world.ranks_to_values[0][: min(k, config.shift_head)]
        for before, after in zip(world.weights, world.weights[1:]):
            assert set(np.flatnonzero(before != after).tolist()) <= set(head_values.tolist())
            if head_values.size > 20:  # correlated but not equal: corr ~ sqrt(1 - concept_drift)
                corr = np.corrcoef(before[head_values], after[head_values])[0, 1]
                assert 0.85 < corr < 0.999, corr


def test_early_long_tail_values_are_frequent_only_in_hist(small_sim):
    config, n = small_sim.config, small_sim.config.rows
    cut = int(config.early_end * n)
    large = [f for f, k in enumerate(config.cardinalities) if k >= config.early_min_cardinality]
    assert large
    for f in large:
        world, values = small_sim.worlds[f], small_sim.categorical[config.categorical_names[f]]
        assert world.early.size == config.early_values
        base_rank = np.argsort(world.ranks_to_values[0])[world.early]
        assert base_rank.min() >= config.cardinalities[f] // 2  # long-tail values by popularity
        early_share, late_share = np.isin(values[:cut], world.early).mean(), np.isin(values[cut:], world.early).mean()
        assert early_share > 5 * late_share > 0
        counts = np.bincount(values[:cut], minlength=config.cardinalities[f])[world.early]
        assert counts.min() >= 50  # frequent enough in hist for a teacher to learn each one


def test_strong_interactions_preset_is_dominated_by_pairs():
    sim = simulate(synthetic_preset("strong_interactions", rows=20_000))
    late = slice(int(sim.config.early_end * sim.config.rows), None)  # after the early long-tail period
    assert sim.interaction.std() > 2 * sim.first_order.std()
    assert sim.interaction[late].std() > 2.5 * sim.first_order[late].std()
    assert len(sim.pairs) == 16
    assert all(sim.config.cardinalities[i] <= 1000 and sim.config.cardinalities[j] <= 1000 for i, j in sim.pairs)


def test_criteo_tsv_export_round_trips(tmp_path):
    table = generate_synthetic(synthetic_preset("criteo_like", rows=3_000))
    raw = read_criteo(write_criteo_tsv(table, tmp_path / "train.txt"))
    np.testing.assert_array_equal(raw.table.column("label").to_numpy(), table.column("label").to_numpy())
    for name in ("C1", "C3"):
        ids, tokens = table.column(name).to_numpy(), raw.table.column(name).to_numpy(zero_copy_only=False)
        pairs = set(zip(ids.tolist(), tokens.tolist()))
        assert len(pairs) == len(set(ids.tolist())) == len(set(tokens.tolist()))  # a bijection
    written = raw.table.column("I1")
    assert written.null_count == table.column("I1").null_count
    with pytest.raises(ValueError, match="I1..I13"):
        write_criteo_tsv(pa.table({"label": [1]}), tmp_path / "x.txt")
