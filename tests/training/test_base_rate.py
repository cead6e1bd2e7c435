"""Starting at the label's base rate keeps a narrow ReLU layer alive; a dead one is refused loudly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossadapt.data import PreparedDataset, SplitArrays, prepare_dataset, synthetic_preset
from crossadapt.models import build_model
from crossadapt.training import ConstantPredictorError, Trainer, positive_rate, predict_proba, train_teacher

PAPER_TEACHER = {"architecture": "mlp", "embedding_dim": 8, "hidden_units": [64, 32, 4]}


@pytest.fixture(scope="module")
def clicks(tmp_path_factory) -> PreparedDataset:
    """40k rows of the `small` preset (CTR 0.21): vocabularies large enough that the paper's
    embedding lr of 0.1 does not rescue a dead layer the way it can on a few thousand rows."""
    return prepare_dataset(synthetic_preset("small", rows=40_000, seed=0), tmp_path_factory.mktemp("clicks") / "d")


def _paper_teacher(dataset, seed: int):
    torch.manual_seed(seed)
    return build_model(PAPER_TEACHER, dataset.feature_spec)


def _fit_rows(dataset) -> SplitArrays:
    return SplitArrays.concat([dataset.split("hist"), dataset.split("train")])


def _with_positive_output_weights(model):
    """The initialisation that killed the paper's teacher at 2 of 5 seeds: all output weights > 0."""
    with torch.no_grad():
        model.output.weight.abs_().add_(0.1)
    return model


def _alive_last_layer_units(model, rows: SplitArrays) -> int:
    """How many units of the last hidden layer fire for at least one row."""
    model.eval()
    with torch.no_grad():
        hidden = model.forward_with_representation(torch.as_tensor(np.asarray(rows.categorical)),
                                                   torch.as_tensor(np.asarray(rows.numerical)))[1]
    return int((hidden > 0).any(0).sum())


def test_fresh_model_predicts_the_base_rate(make_model, dataset):
    rows = _fit_rows(dataset)
    rate = positive_rate(rows)
    model = make_model()
    model.set_base_rate(rate)
    assert float(model.logit_offset) == pytest.approx(math.log(rate / (1 - rate)))
    # embeddings start at 1e-4, so every row's prediction sits at the base rate
    assert predict_proba(model, rows).mean() == pytest.approx(rate, abs=0.01)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.2, float("nan")])
def test_base_rate_outside_the_open_interval_is_refused(make_model, rate):
    with pytest.raises(ValueError, match="base rate"):
        make_model().set_base_rate(rate)


def test_positive_rate_is_none_for_one_class(dataset):
    rows = dataset.split("train")
    negatives = rows.take(np.flatnonzero(np.asarray(rows.label) < 0.5))
    assert positive_rate(negatives) is None
    assert 0 < positive_rate(rows) < 1


@pytest.mark.parametrize("seed", [0, 1])
def test_base_rate_keeps_the_narrow_layer_alive_where_zero_start_kills_it(clicks, fast_config, seed):
    rows = _fit_rows(clicks)
    dead = _with_positive_output_weights(_paper_teacher(clicks, seed))
    alive = _with_positive_output_weights(_paper_teacher(clicks, seed))
    alive.set_base_rate(positive_rate(rows))
    for model in (dead, alive):
        Trainer(model, fast_config(epochs=1, batch_size=512)).fit(rows)
    test = clicks.split("test")
    assert _alive_last_layer_units(dead, test) == 0
    assert np.std(predict_proba(dead, test), dtype=np.float64) < 1e-7
    assert _alive_last_layer_units(alive, test) >= 2
    assert np.std(predict_proba(alive, test)) > 1e-3


def test_validation_refuses_a_constant_predictor(clicks, fast_config):
    model = _with_positive_output_weights(_paper_teacher(clicks, 0))
    trainer = Trainer(model, fast_config(epochs=2, batch_size=512))
    with pytest.raises(ConstantPredictorError, match="same probability .*dead ReLUs"):
        trainer.fit(_fit_rows(clicks), valid=clicks.split("online"))


def test_train_teacher_starts_from_the_base_rate(dataset, fast_config):
    result = train_teacher(dataset, PAPER_TEACHER, fast_config(epochs=1, seed=1))
    fit_rate = positive_rate(_fit_rows(dataset).slice(0, result.train_rows))
    assert float(result.model.logit_offset) == pytest.approx(math.log(fit_rate / (1 - fit_rate)), rel=1e-5)
    assert result.metrics["prediction_std"] > 1e-3
