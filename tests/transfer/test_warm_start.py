"""Cross-domain warm start: each level does what it says, the two-domain data, the bench method."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from crossadapt.data import SplitArrays
from crossadapt.data.two_domain import TwoDomainConfig, generate_two_domain, prepare_two_domain
from crossadapt.metrics import log_odds
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.spec import CategoricalField, FeatureSpec
from crossadapt.transfer.warm_start import (
    SourceEmbeddingFeatures,
    WarmStartConfig,
    copy_matching_parameters,
    historical_embeddings,
    reset_batch_norm,
    source_feature_spec,
    warm_start_model,
)

SPEC = FeatureSpec(categorical=(CategoricalField(name="user", vocab_size=6), CategoricalField(name="item", vocab_size=4)),
                   numerical=("price",))


def _model(spec: FeatureSpec, seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8],
                                           "embedding_init_std": 0.1, **overrides}), spec)


def test_historical_embeddings_are_standardised_over_the_seen_ids_and_zero_elsewhere():
    tiny = _model(SPEC)
    source = SplitArrays(categorical=np.array([[1, 1], [2, 1], [2, 3], [4, 2]]), numerical=np.zeros((4, 1), np.float32),
                         label=np.array([0, 1, 0, 1], np.float32))
    table = historical_embeddings(tiny, source, ["user"])["user"]
    raw = tiny.embedding.get_table("user").detach()
    seen = raw[[1, 2, 4]]
    expected = (seen - seen.mean(0)) / seen.std(0, unbiased=False)
    assert torch.allclose(table[[1, 2, 4]], expected, atol=1e-5)
    assert torch.equal(table[[0, 3, 5]], torch.zeros(3, 4))  # <UNK> and ids the source never shows


def test_source_embeddings_reach_the_model_as_numerical_fields():
    table = torch.arange(12, dtype=torch.float32).reshape(6, 2) / 10  # user id u -> [0.2u, 0.2u + 0.1]
    inner = _model(source_feature_spec(SPEC, {"user": table}))
    assert inner.spec.numerical == ("price", "source_user_0", "source_user_1")
    model = SourceEmbeddingFeatures(inner, {"user": table})
    categorical, numerical = torch.tensor([[3, 1], [5, 2]]), torch.tensor([[0.5], [-1.0]])
    seen = []
    handle = inner.register_forward_pre_hook(lambda module, args: seen.append(args[1]))
    logits = model(categorical, numerical)
    handle.remove()
    assert torch.equal(seen[0], torch.tensor([[0.5, 0.6, 0.7], [-1.0, 1.0, 1.1]]))
    assert torch.equal(logits, inner(categorical, seen[0]))
    # the tables are frozen inputs: not parameters of the model, so no optimiser moves them
    assert all(p.data_ptr() != model.source_table_0.data_ptr() for p in model.parameters())
    # another source vector for user 3 changes the first row's score and not the second's
    model.source_table_0[3] += 1.0
    changed = model(categorical, numerical)
    assert changed[0] != logits[0] and changed[1] == logits[1]


def test_parameters_are_copied_exactly_where_shapes_match_and_the_rest_keeps_its_init():
    source = _model(SPEC, seed=1, hidden_units=[8, 4])
    target = _model(SPEC, seed=2, hidden_units=[8, 6])  # second layer: 8 -> 6 instead of 8 -> 4
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = copy_matching_parameters(source, target, exclude=("logit_offset",))
    theirs, ours = source.state_dict(), target.state_dict()
    assert report.copied and report.skipped
    for name in report.copied:
        assert torch.equal(ours[name], theirs[name]), name
    skipped = {name: (mine, other) for name, mine, other in report.skipped}
    assert "embedding.table.weight" in report.copied
    for name, (mine, other) in skipped.items():
        assert torch.equal(ours[name], before[name]), name  # kept at the target's own initialisation
        assert mine == tuple(ours[name].shape) and other == tuple(theirs[name].shape) and mine != other
    assert set(report.copied) | set(skipped) == set(ours) - {"logit_offset"}


def test_batch_norm_statistics_are_reset_and_re_estimated_on_the_target_rows():
    model = _model(SPEC, batch_norm=True, hidden_units=[8])
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    rng = np.random.default_rng(0)
    rows = SplitArrays(categorical=np.stack([rng.integers(0, 6, 300), rng.integers(0, 4, 300)], 1),
                       numerical=rng.normal(2.0, 1.0, (300, 1)).astype(np.float32), label=np.zeros(300, np.float32))
    model.train()
    with torch.no_grad():  # "source" statistics: a few train-mode batches
        model(torch.from_numpy(rows.categorical[:50]), torch.from_numpy(rows.numerical[:50]) * 5)
    assert not torch.allclose(norm.running_mean, torch.zeros(8))
    assert reset_batch_norm(model) == 1
    assert torch.equal(norm.running_mean, torch.zeros(8)) and torch.equal(norm.running_var, torch.ones(8))
    assert int(norm.num_batches_tracked) == 0
    # re-estimated: the exact average of the per-batch statistics of the BN input over the target rows
    inputs = []
    handle = norm.register_forward_pre_hook(lambda module, args: inputs.append(args[0].detach()))
    assert reset_batch_norm(model, rows, batch_size=100) == 1
    handle.remove()
    assert model.training and norm.momentum == 0.1  # mode and momentum restored
    assert torch.allclose(norm.running_mean, torch.stack([x.mean(0) for x in inputs]).mean(0), atol=1e-5)
    assert torch.allclose(norm.running_var, torch.stack([x.var(0, unbiased=True) for x in inputs]).mean(0), atol=1e-5)
    assert reset_batch_norm(_model(SPEC)) == 0  # no batch norm: nothing to do


def test_warm_start_config_is_validated():
    with pytest.raises(ValidationError, match="at least one"):
        WarmStartConfig(embeddings=False, parameters=False, batch_norm=False)
    with pytest.raises(ValidationError):
        WarmStartConfig(levels=3)
    with pytest.raises(ValueError, match="not categorical fields"):
        WarmStartConfig(embedding_fields=["shop"]).check_fields(SPEC)


@pytest.fixture(scope="module")
def two_domains(tmp_path_factory) -> object:
    config = TwoDomainConfig(rows=8000, users=300, source_items=60, target_items=40)
    return config, prepare_two_domain(config, Path(tmp_path_factory.mktemp("two-domain")) / "data")


def test_two_domains_share_users_and_differ_in_items_and_base_rates(two_domains):
    config, dataset = two_domains
    table = generate_two_domain(config).to_pydict()
    domain, item = np.array(table["domain"]), np.array(table["item"])
    prob, user = np.array(table["prob"]), np.array(table["user"])
    assert (domain[: config.source_rows] == 0).all() and (domain[config.source_rows:] == 1).all()  # source first
    assert not set(item[domain == 0]) & set(item[domain == 1])
    assert len(set(user[domain == 0]) & set(user[domain == 1])) > 0.8 * len(set(user[domain == 1]))
    assert prob[domain == 0].mean() == pytest.approx(config.source_rate, rel=1e-3)
    assert prob[domain == 1].mean() == pytest.approx(config.target_rate, rel=1e-3)
    assert len(dataset.split("hist")) == config.source_rows  # hist is exactly the source domain
    assert sum(len(dataset.split(n)) for n in ("train", "online", "test")) == config.rows - config.source_rows


def test_warm_start_levels_on_two_domains(two_domains):
    _, dataset = two_domains
    student = parse_model_config({"architecture": "mlp", "embedding_dim": 8, "hidden_units": [16, 8],
                                  "batch_norm": True})
    hist, train = dataset.split("hist"), dataset.split("train")
    kwargs = dict(seed=0, batch_size=256, embedding_lr=0.01, dense_lr=1e-3)
    warm = warm_start_model(student, dataset.feature_spec, hist, train, WarmStartConfig(batch_norm_rows=512), **kwargs)
    model = warm.model
    assert isinstance(model, SourceEmbeddingFeatures) and warm.details["source_features"] == {"user": 4}
    assert warm.details["parameters"]["skipped"] == [] and warm.details["parameters"]["copied"] > 0
    assert warm.details["batch_norm_layers"] == 2
    assert float(model.model.logit_offset) == pytest.approx(log_odds(float(train.label.mean())), abs=1e-5)
    norm = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm1d))
    assert int(norm.num_batches_tracked) == 1  # 512 rows in one re-estimation batch, from 0 after the reset
    # the complete source model's parameters arrived: not the fresh initialisation of the same seed
    fresh = warm_start_model(student, dataset.feature_spec, hist, train,
                             WarmStartConfig(parameters=False, batch_norm=False), **kwargs).model
    assert torch.equal(fresh.source_table_0, model.source_table_0)  # same tiny source model
    assert not torch.equal(fresh.model.embedding.table.weight, model.model.embedding.table.weight)
    only_parameters = warm_start_model(student, dataset.feature_spec, hist, train,
                                       WarmStartConfig(embeddings=False), **kwargs).model
    assert not isinstance(only_parameters, SourceEmbeddingFeatures)  # (b) alone: a plain CTRModel
    with pytest.raises(ValueError, match="source-domain rows"):
        warm_start_model(student, dataset.feature_spec, hist.slice(0, 0), train, WarmStartConfig(), **kwargs)


def test_the_bench_method_runs_and_beats_scratch_on_the_small_two_domain_setting(two_domains):
    from crossadapt.transfer.experiments.methods import MethodContext, run_method, score
    from crossadapt.transfer.switch_config import OptimSection

    _, dataset = two_domains
    splits = {name: dataset.split(name) for name in ("hist", "train", "online", "test")}
    student = parse_model_config({"architecture": "mlp", "embedding_dim": 8, "hidden_units": [32, 8]})
    ctx = MethodContext(splits=splits, feature_spec=dataset.feature_spec, teacher=_model(SPEC), student_config=student,
                        optim=OptimSection(batch_size=256, embedding_lr=0.00625))
    test = splits["test"]
    warm, scratch = run_method("CrossDomain-WarmStart", ctx), run_method("Scratch", ctx)
    assert warm.name == "CrossDomain-WarmStart" and warm.train_seconds > warm.stage_seconds["complete_source_model"]
    assert warm.curve is not None and warm.curve.seconds[0] > warm.stage_seconds["tiny_source_model"]
    warm_auc, scratch_auc = score(warm.model, test)["auc"], score(scratch.model, test)["auc"]
    assert warm_auc > scratch_auc + 0.02  # measured: 0.725 against 0.581, (warm_auc, scratch_auc)


def test_open_two_domain_prepares_once_then_opens(tmp_path):
    from crossadapt.data.two_domain import open_two_domain

    first = open_two_domain(tmp_path, 2000, 3)
    assert first.path.name == "two_domain-2000-s3" and len(first.split("hist")) == 1400
    stamp = (first.path / "dataset.json").stat().st_mtime_ns
    assert open_two_domain(tmp_path, 2000, 3).path == first.path
    assert (first.path / "dataset.json").stat().st_mtime_ns == stamp  # opened, not prepared again


def test_switch_runs_the_warm_start_comparison_on_two_domains(two_domains, tmp_path):
    """`warm_start` + `baselines: [..., CrossDomain-WarmStart]`: the switch scores it beside Scratch."""
    from crossadapt.transfer.switch import run_switch
    from crossadapt.transfer.switch_config import ConfigError, parse_switch_config

    _, dataset = two_domains
    small = {"architecture": "mlp", "embedding_dim": 4, "hidden_units": [16]}
    raw = {"data": {"dir": str(dataset.path)}, "teacher": {"train": {"model": small}}, "student": {"model": small},
           "optim": {"batch_size": 256}, "offline": {"sampling": {"ratio": 0.5, "temporal_blocks": 2}},
           "online": {"drift": {"windows": 4, "bins": 10}}, "baselines": ["Scratch", "CrossDomain-WarmStart"],
           "warm_start": {"parameters": False, "tiny_dim": 3}}
    results = run_switch(parse_switch_config(raw), tmp_path / "out")
    scores = {score.name: score for score in results.baselines}
    assert set(scores) == {"Scratch", "CrossDomain-WarmStart"}
    assert scores["CrossDomain-WarmStart"].auc > scores["Scratch"].auc
    with pytest.raises(ConfigError, match="add it to baselines"):
        parse_switch_config({**raw, "baselines": ["Scratch"]})
    with pytest.raises(ConfigError, match="warm_start.levels"):
        parse_switch_config({**raw, "warm_start": {"levels": 2}})
