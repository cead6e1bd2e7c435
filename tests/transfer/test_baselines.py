"""Baselines: the data each one sees, both models learning in the KD baselines, Hint-KD's regressor, RKD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossadapt.data import SplitArrays
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.spec import CategoricalField, FeatureSpec
from crossadapt.training import TrainConfig
from crossadapt.transfer.baselines import (
    BASELINES,
    BaselineConfig,
    HintKDTrainer,
    RKDTrainer,
    run_baseline,
    run_hint_kd,
    run_rkd,
    run_vanilla_kd,
)
from crossadapt.transfer.codistill import AsymmetricTeacher
from crossadapt.transfer.distill import DistillationTrainer
from crossadapt.transfer.losses import kd_kl

SPEC = FeatureSpec(
    categorical=(CategoricalField(name="user", vocab_size=30), CategoricalField(name="item", vocab_size=12)),
    numerical=("price",),
)


def _data(n: int, seed: int = 0) -> SplitArrays:
    rng = np.random.default_rng(seed)
    cat = np.stack([rng.integers(0, 30, n), rng.integers(0, 12, n)], 1).astype(np.int64)
    num = rng.standard_normal((n, 1)).astype(np.float32)
    z = 1.2 * np.sin(cat[:, 0]) - 0.8 * (cat[:, 1] % 3 == 0) + 0.6 * num[:, 0] - 0.5
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    return SplitArrays(categorical=cat, numerical=num, label=label, timestamp=np.arange(n, dtype=np.int64))


def _model(dim: int, seed: int, arch: str = "mlp", hidden=(8,)):
    torch.manual_seed(seed)
    config = parse_model_config({"architecture": arch, "embedding_dim": dim, "hidden_units": list(hidden),
                                 "embedding_init_std": 0.05})
    return build_model(config, SPEC)


SPLITS = {"hist": _data(300, 1), "train": _data(400, 2), "online": _data(100, 3), "test": _data(300, 4)}
CONFIG = BaselineConfig(batch_size=50, window_batches=1, num_threads=1)


def _count_training_rows(model) -> list[int]:
    """Rows of every training-mode embedding lookup of ``model`` (evaluation runs in eval mode)."""
    rows: list[int] = []
    model.embedding.register_forward_hook(lambda m, i, out: rows.append(int(out.shape[0])) if m.training else None)
    return rows


@pytest.mark.parametrize(
    ("name", "offline_rows"),
    [("Scratch", 400), ("Scratch-Online", 0), ("Full-Retrain", 700), ("Vanilla-KD", 400), ("Hint-KD", 400),
     ("RKD", 400)],
)
def test_each_baseline_sees_the_papers_data_and_reports(name, offline_rows):
    student = _model(6, 2, arch="deepfm")
    rows = _count_training_rows(student)
    teacher = _model(4, 1)
    result = run_baseline(name, student=student, teacher=teacher, splits=SPLITS, config=CONFIG)
    assert result.method == name and result.model is student
    # Offline passes (shuffled) and then the online stream (100 rows, two batches of 50).
    assert sum(rows) == offline_rows + 100 and rows[-2:] == [50, 50]
    assert result.online is not None and result.online.rows == 100 and result.online.batches == 2
    assert 0.0 <= result.metrics["auc"] <= 1.0 and result.metrics["rows"] == 300
    assert result.seconds >= result.offline_seconds >= 0.0
    assert (result.teacher is not None) == (name in ("Vanilla-KD", "Hint-KD", "RKD"))


def test_vanilla_kd_updates_both_models_but_not_the_callers_teacher():
    teacher = _model(4, 1)
    original = [p.detach().clone() for p in teacher.parameters()]
    result = run_vanilla_kd(teacher, _model(6, 2), SPLITS["train"], SPLITS["online"], CONFIG)
    assert all(torch.equal(a, b) for a, b in zip(original, teacher.parameters()))
    assert result.teacher is not teacher
    assert not all(torch.equal(a, b) for a, b in zip(original, result.teacher.parameters()))
    # τ = 1: the teacher learns on every batch, 8 offline (400 rows) and 2 streamed; t counts them all.
    assert result.online.teacher_update_steps == list(range(1, 11))
    frozen = run_vanilla_kd(teacher, _model(6, 2), SPLITS["train"], None,
                            CONFIG.model_copy(update={"update_teacher": False}))
    assert all(torch.equal(a, b) for a, b in zip(original, frozen.teacher.parameters()))


def test_vanilla_kd_loss_is_bce_plus_lambda_kl():
    trainer = DistillationTrainer(_model(6, 2), TrainConfig(num_threads=1), kd_weight=0.7, temperature=4.0,
                                  kd_loss="kl")
    batch = _data(16).with_teacher_logit(np.linspace(-2, 2, 16, dtype=np.float32)).to_batch()
    logits = torch.linspace(1, -1, 16)
    expected = F.binary_cross_entropy_with_logits(logits, batch.label) + 0.7 * kd_kl(logits, batch.teacher_logit, 4.0)
    assert trainer.compute_loss(batch, logits).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kd_kl(batch.teacher_logit, batch.teacher_logit, 4.0).item() == pytest.approx(0.0, abs=1e-7)


def _fixed_batch_losses(trainer, teacher, steps: int) -> list[float]:
    """Train ``trainer`` on one fixed batch with the frozen ``teacher``'s features; the KD term each step."""
    asym = AsymmetricTeacher(teacher, interval=1, optimizer="adam", embedding_lr=0.1, dense_lr=1e-3, trainable=False)
    batch = _data(64, 9).to_batch()
    losses = []
    for _ in range(steps):
        _, trainer.teacher_context = asym.logits_and_features(batch, trainer.teacher_features)
        trainer.train_step(batch)
        losses.append(float(trainer.last_feature_loss))
    return losses


@pytest.mark.parametrize("target", ["embedding", "hidden"])
def test_hint_kd_regressor_learns_the_teacher_features(target):
    teacher, student = _model(4, 1, hidden=(8,)), _model(6, 2, hidden=(12,))
    widths = (6, 4) if target == "embedding" else (12, 8)
    trainer = HintKDTrainer(student, TrainConfig(num_threads=1, dense_lr=1e-2), weight=1.0, target=target,
                            student_width=widths[0], teacher_width=widths[1])
    w0 = trainer.regressor.weight.detach().clone()
    losses = _fixed_batch_losses(trainer, teacher, 60)
    assert not torch.equal(w0, trainer.regressor.weight)
    assert losses[-1] < 0.5 * losses[0]


def test_rkd_trains_across_widths_and_architectures():
    teacher, student = _model(4, 1, hidden=(8,)), _model(10, 2, arch="dcn", hidden=(16,))
    trainer = RKDTrainer(student, TrainConfig(num_threads=1, dense_lr=1e-2), weight=1.0, distance_weight=1.0,
                         angle_weight=2.0, max_rows=64)
    losses = _fixed_batch_losses(trainer, teacher, 60)
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
    result = run_rkd(_model(4, 1), _model(10, 2, arch="dcn", hidden=(16,)), SPLITS["train"], SPLITS["online"],
                     CONFIG.model_copy(update={"rkd_max_rows": 16}), test=SPLITS["test"])
    assert np.isfinite(result.metrics["logloss"])
    hint = run_hint_kd(_model(4, 1), _model(10, 2, arch="dcn", hidden=(16,)), SPLITS["train"], None, CONFIG)
    assert hint.online is None and hint.metrics == {}


def test_run_baseline_rejects_bad_requests():
    with pytest.raises(ValueError, match="hist"):
        without_hist = {"train": SPLITS["train"], "online": SPLITS["online"]}
        run_baseline("Full-Retrain", student=_model(6, 2), splits=without_hist)
    with pytest.raises(ValueError, match="teacher"):
        run_baseline("RKD", student=_model(6, 2), splits=SPLITS)
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baseline("Oracle", student=_model(6, 2), splits=SPLITS)  # type: ignore[arg-type]
    assert BASELINES == ("Scratch", "Scratch-Online", "Full-Retrain", "Vanilla-KD", "Hint-KD", "RKD")
