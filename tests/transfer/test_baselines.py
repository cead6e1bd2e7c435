"""Baselines: the data each one sees, both models learning in the KD baselines, Hint-KD's regressor, RKD."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossadapt.data import SplitArrays
from crossadapt.data.batch import Batch
from crossadapt.training import TrainConfig
from crossadapt.transfer.experiments.baselines import (
    BASELINES,
    BaselineConfig,
    HintKDTrainer,
    RKDTrainer,
    run_baseline,
    run_hint_kd,
    run_rkd,
    run_vanilla_kd,
)
from crossadapt.transfer.online.codistillation import AsymmetricTeacher
from crossadapt.transfer.offline.distillation import DistillationTrainer
from crossadapt.transfer.offline.losses import kd_kl


CONFIG = BaselineConfig(batch_size=50, window_batches=1, num_threads=1)


@pytest.fixture(scope="module")
def splits(tiny_data) -> dict[str, SplitArrays]:
    return {"hist": tiny_data(300, 1), "train": tiny_data(400, 2), "online": tiny_data(100, 3),
            "test": tiny_data(300, 4)}


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
def test_each_baseline_sees_the_papers_data_and_reports(splits, tiny_model, name, offline_rows):
    student = tiny_model(6, 2, arch="deepfm")
    rows = _count_training_rows(student)
    teacher = tiny_model(4, 1)
    result = run_baseline(name, student=student, teacher=teacher, splits=splits, config=CONFIG)
    assert result.method == name and result.model is student
    # Offline passes (shuffled) and then the online stream (100 rows, two batches of 50).
    assert sum(rows) == offline_rows + 100 and rows[-2:] == [50, 50]
    assert result.online is not None and result.online.rows == 100 and result.online.batches == 2
    assert 0.0 <= result.metrics["auc"] <= 1.0 and result.metrics["rows"] == 300
    assert result.seconds >= result.offline_seconds >= 0.0
    assert (result.teacher is not None) == (name in ("Vanilla-KD", "Hint-KD", "RKD"))


def test_vanilla_kd_updates_both_models_but_not_the_callers_teacher(splits, tiny_model):
    teacher = tiny_model(4, 1)
    original = [p.detach().clone() for p in teacher.parameters()]
    result = run_vanilla_kd(teacher, tiny_model(6, 2), splits["train"], splits["online"], CONFIG)
    assert all(torch.equal(a, b) for a, b in zip(original, teacher.parameters()))
    assert result.teacher is not teacher
    assert not all(torch.equal(a, b) for a, b in zip(original, result.teacher.parameters()))
    # τ = 1: the teacher learns on every batch, 8 offline (400 rows) and 2 streamed; t counts them all.
    assert result.online.teacher_update_steps == list(range(1, 11))
    frozen = run_vanilla_kd(teacher, tiny_model(6, 2), splits["train"], None,
                            CONFIG.model_copy(update={"update_teacher": False}))
    assert all(torch.equal(a, b) for a, b in zip(original, frozen.teacher.parameters()))


def test_vanilla_kd_loss_is_bce_plus_lambda_kl(tiny_data, tiny_model):
    trainer = DistillationTrainer(tiny_model(6, 2), TrainConfig(num_threads=1), kd_weight=0.7, temperature=4.0,
                                  kd_loss="kl")
    batch = tiny_data(16).with_teacher_logit(np.linspace(-2, 2, 16, dtype=np.float32)).to_batch()
    logits = torch.linspace(1, -1, 16)
    expected = F.binary_cross_entropy_with_logits(logits, batch.label) + 0.7 * kd_kl(logits, batch.teacher_logit, 4.0)
    assert trainer.compute_loss(batch, logits).item() == pytest.approx(expected.item(), rel=1e-6)
    assert kd_kl(batch.teacher_logit, batch.teacher_logit, 4.0).item() == pytest.approx(0.0, abs=1e-7)


def _fixed_batch_losses(trainer, teacher, batch: Batch, steps: int) -> list[float]:
    """Train ``trainer`` on one fixed batch with the frozen ``teacher``'s features; the KD term each step."""
    asym = AsymmetricTeacher(teacher, interval=1, optimizer="adam", embedding_lr=0.1, dense_lr=1e-3, trainable=False)
    losses = []
    for _ in range(steps):
        _, trainer.teacher_context = asym.logits_and_features(batch, trainer.teacher_features)
        trainer.train_step(batch)
        losses.append(float(trainer.last_feature_loss))
    return losses


@pytest.mark.parametrize("target", ["embedding", "hidden"])
def test_hint_kd_regressor_learns_the_teacher_features(tiny_data, tiny_model, target):
    teacher, student = tiny_model(4, 1, hidden=(8,)), tiny_model(6, 2, hidden=(12,))
    widths = (6, 4) if target == "embedding" else (12, 8)
    trainer = HintKDTrainer(student, TrainConfig(num_threads=1, dense_lr=1e-2), weight=1.0, target=target,
                            student_width=widths[0], teacher_width=widths[1])
    w0 = trainer.regressor.weight.detach().clone()
    losses = _fixed_batch_losses(trainer, teacher, tiny_data(64, 9).to_batch(), 60)
    assert not torch.equal(w0, trainer.regressor.weight)
    assert losses[-1] < 0.5 * losses[0]


@pytest.mark.parametrize("target", ["embedding", "hidden"])
def test_feature_kd_step_takes_its_features_from_the_one_training_forward(tiny_data, tiny_model, target):
    teacher, student = tiny_model(4, 1), tiny_model(6, 2, hidden=(12,))
    widths = (6, 4) if target == "embedding" else (12, 8)
    trainer = HintKDTrainer(student, TrainConfig(num_threads=1), weight=1.0, target=target,
                            student_width=widths[0], teacher_width=widths[1])
    forwards = _count_training_rows(student)
    asym = AsymmetricTeacher(teacher, interval=1, optimizer="adam", embedding_lr=0.1, dense_lr=1e-3, trainable=False)
    batch = tiny_data(32, 9).to_batch()
    _, trainer.teacher_context = asym.logits_and_features(batch, target)
    trainer.train_step(batch)
    assert forwards == [32]  # one training forward of the student, no second pass for its features
    assert trainer.global_step == 1 and trainer.last_feature_loss > 0 and trainer.student_features is None


def test_rkd_trains_across_widths_and_architectures(tiny_data, splits, tiny_model):
    teacher, student = tiny_model(4, 1, hidden=(8,)), tiny_model(10, 2, arch="dcn", hidden=(16,))
    trainer = RKDTrainer(student, TrainConfig(num_threads=1, dense_lr=1e-2), weight=1.0, distance_weight=1.0,
                         angle_weight=2.0, max_rows=64)
    losses = _fixed_batch_losses(trainer, teacher, tiny_data(64, 9).to_batch(), 60)
    assert all(np.isfinite(losses)) and losses[-1] < 0.7 * losses[0]
    result = run_rkd(tiny_model(4, 1), tiny_model(10, 2, arch="dcn", hidden=(16,)), splits["train"], splits["online"],
                     CONFIG.model_copy(update={"rkd_max_rows": 16}), test=splits["test"])
    assert np.isfinite(result.metrics["logloss"])
    hint = run_hint_kd(tiny_model(4, 1), tiny_model(10, 2, arch="dcn", hidden=(16,)), splits["train"], None, CONFIG)
    assert hint.online is None and hint.metrics == {}


def test_run_baseline_rejects_bad_requests(splits, tiny_model):
    with pytest.raises(ValueError, match="hist"):
        without_hist = {"train": splits["train"], "online": splits["online"]}
        run_baseline("Full-Retrain", student=tiny_model(6, 2), splits=without_hist)
    with pytest.raises(ValueError, match="teacher"):
        run_baseline("RKD", student=tiny_model(6, 2), splits=splits)
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baseline("Oracle", student=tiny_model(6, 2), splits=splits)  # type: ignore[arg-type]
    assert BASELINES == ("Scratch", "Scratch-Online", "Full-Retrain", "Vanilla-KD", "Hint-KD", "RKD")
