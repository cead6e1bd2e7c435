"""Progressive distillation: what each phase may change, the one-off teacher pass, the loss, adaptive λ."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from crossadapt.training import TrainConfig
from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig, AdaptiveSchedule
from crossadapt.transfer.experiments.baselines import BaselineConfig
from crossadapt.transfer.online.codistillation import OnlineCoDistillConfig
from crossadapt.transfer.offline.distillation import (
    DistillationTrainer,
    OfflineDistillConfig,
    cache_teacher_logits,
    distill_offline,
    logloss_from_logits,
)
from crossadapt.transfer.offline.losses import kd_cross_entropy


def _snapshot(params) -> list[torch.Tensor]:
    return [p.detach().clone() for p in params]


def _identical(a, b) -> bool:
    """True if no tensor changed at all (bitwise)."""
    return all(torch.equal(x, y) for x, y in zip(a, b))


CONFIG = OfflineDistillConfig(batch_size=64, frozen_epochs=1, joint_epochs=1, num_threads=1)


def test_phase_one_freezes_embeddings_bit_for_bit_and_trains_the_interaction_net(tiny_data, tiny_model):
    teacher, student = tiny_model(4, seed=1), tiny_model(6, seed=2, arch="deepfm")
    emb0, net0 = _snapshot(student.embedding_parameters()), _snapshot(student.interaction_parameters())
    result = distill_offline(student, tiny_data(600), CONFIG.model_copy(update={"joint_epochs": 0}), teacher=teacher)
    assert [p.name for p in result.phases] == ["frozen"]
    assert _identical(emb0, student.embedding_parameters())  # the first-order table of DeepFM as well
    assert not _identical(net0, student.interaction_parameters())
    assert all(p.requires_grad for p in student.parameters())  # unfrozen again afterwards


def test_phase_two_trains_embeddings_and_interaction_net(tiny_data, tiny_model):
    teacher, student = tiny_model(4, seed=1), tiny_model(6, seed=2)
    result = distill_offline(student, tiny_data(600), CONFIG, teacher=teacher)
    assert [p.name for p in result.phases] == ["frozen", "joint"]
    # The joint phase alone, from the state the full run left: every embedding tensor and the net move.
    emb1, net1 = _snapshot(student.embedding_parameters()), _snapshot(student.interaction_parameters())
    distill_offline(student, tiny_data(600), CONFIG.model_copy(update={"frozen_epochs": 0}), teacher=teacher)
    for before, now in zip(emb1, student.embedding_parameters()):
        assert not torch.equal(before, now)
    assert not _identical(net1, student.interaction_parameters())


def test_teacher_logits_are_computed_once_in_one_batched_pass(tiny_data, tiny_model):
    teacher, student = tiny_model(4, seed=1), tiny_model(6, seed=2)
    calls: list[int] = []
    teacher.register_forward_hook(lambda module, inputs, out: calls.append(int(out.shape[0])))
    train = tiny_data(500)
    config = CONFIG.model_copy(update={"frozen_epochs": 2, "joint_epochs": 2, "teacher_batch_size": 200})
    result = distill_offline(student, train, config, teacher=teacher)
    assert calls == [200, 200, 100]  # one pass over 500 rows, none during the 4 epochs
    assert sum(p.steps for p in result.phases) == 4 * 8
    # Cached logits that come with the data are used as they are: no teacher call at all.
    calls.clear()
    cached = train.with_teacher_logit(cache_teacher_logits(teacher, train))
    calls.clear()
    result = distill_offline(tiny_model(6, seed=3), cached, CONFIG, teacher=teacher)
    assert calls == [] and result.teacher_logit_seconds == 0.0


def test_distillation_loss_is_bce_plus_lambda_kd(tiny_data, tiny_model):
    student = tiny_model(6, seed=2)
    trainer = DistillationTrainer(student, TrainConfig(num_threads=1), kd_weight=0.7, temperature=4.0)
    batch = tiny_data(32).with_teacher_logit(np.linspace(-3, 3, 32, dtype=np.float32)).to_batch()
    logits = torch.linspace(-1, 1, 32)
    expected = F.binary_cross_entropy_with_logits(logits, batch.label) + 0.7 * kd_cross_entropy(
        logits, batch.teacher_logit, 4.0)
    assert trainer.compute_loss(batch, logits).item() == pytest.approx(expected.item(), rel=1e-6)
    task, kd = trainer.pop_loss_parts()
    assert task == pytest.approx(F.binary_cross_entropy_with_logits(logits, batch.label).item(), rel=1e-6)
    with pytest.raises(ValueError, match="teacher_logit"):
        trainer.compute_loss(tiny_data(4).to_batch(), torch.zeros(4))


def test_teacher_better_gate_distills_only_where_the_teacher_wins(tiny_data, tiny_model):
    """kd_gate='teacher_better': the KD term vanishes once the student beats the teacher on every row of
    the batch, and is the ungated term while the teacher wins every row."""
    batch = tiny_data(32).to_batch()
    sure = torch.where(batch.label > 0.5, 6.0, -6.0)  # confident and right on every row
    gated = DistillationTrainer(tiny_model(6, seed=2), TrainConfig(num_threads=1), kd_weight=0.7,
                                temperature=4.0, kd_gate="teacher_better")
    plain = DistillationTrainer(tiny_model(6, seed=2), TrainConfig(num_threads=1), kd_weight=0.7, temperature=4.0)
    # Student right and sure, teacher uninformed (logit 0): nothing is distilled, the loss is the BCE.
    beaten = dataclasses.replace(batch, teacher_logit=torch.zeros(32))
    assert gated.compute_loss(beaten, sure).item() == pytest.approx(
        F.binary_cross_entropy_with_logits(sure, batch.label).item(), rel=1e-6)
    assert plain.compute_loss(beaten, sure).item() > gated.compute_loss(beaten, sure).item() + 0.1
    # Teacher right and sure, student uninformed: every row is distilled, same loss as without the gate.
    winning = dataclasses.replace(batch, teacher_logit=sure)
    student = torch.zeros(32)
    assert gated.compute_loss(winning, student).item() == pytest.approx(
        plain.compute_loss(winning, student).item(), rel=1e-6)
    with pytest.raises(ValueError, match="kd_gate"):
        DistillationTrainer(tiny_model(6, seed=2), TrainConfig(num_threads=1), kd_weight=0.7, temperature=4.0,
                            kd_gate="sometimes")


def test_task_logit_shift_enters_the_bce_term_only(tiny_data, tiny_model):
    trainer = DistillationTrainer(tiny_model(6, seed=2), TrainConfig(num_threads=1), kd_weight=0.7,
                                  temperature=4.0, task_logit_shift=1.5)
    batch = tiny_data(32).with_teacher_logit(np.linspace(-3, 3, 32, dtype=np.float32)).to_batch()
    logits = torch.linspace(-1, 1, 32)
    expected = F.binary_cross_entropy_with_logits(logits + 1.5, batch.label) + 0.7 * kd_cross_entropy(
        logits, batch.teacher_logit, 4.0)
    assert trainer.compute_loss(batch, logits).item() == pytest.approx(expected.item(), rel=1e-6)


def test_prior_correction_keeps_a_balanced_sample_from_moving_the_base_rate(tiny_data, tiny_model):
    from crossadapt.training import positive_rate, predict_proba
    from crossadapt.transfer.experiments.methods import prior_shift

    data = tiny_data(6000, seed=3)
    labels = np.asarray(data.label)
    positives, negatives = np.flatnonzero(labels > 0.5), np.flatnonzero(labels < 0.5)
    keep = np.sort(np.concatenate([positives, negatives[: len(positives) // 3]]))  # 75% positives
    sample = data.take(keep)
    shift = prior_shift(positive_rate(sample), positive_rate(data))
    assert shift == pytest.approx(np.log(3) - np.log(positive_rate(data) / (1 - positive_rate(data))))
    config = CONFIG.model_copy(update={"batch_size": 128, "frozen_epochs": 0, "joint_epochs": 4, "kd_weight": 0.0})
    mean = {}
    for corrected in (False, True):
        student = tiny_model(6, seed=2)
        distill_offline(student, sample, config.model_copy(update={"task_logit_shift": shift if corrected else 0.0}))
        mean[corrected] = float(predict_proba(student, data).mean())
    assert abs(mean[True] - positive_rate(data)) < 0.04  # calibrated to the data the model will serve
    assert mean[False] > positive_rate(data) + 0.15  # plain BCE learns the sample's 75%


def test_student_learns_from_teacher_and_history_is_reported(tiny_data, tiny_model):
    train, valid = tiny_data(3000, seed=0), tiny_data(1500, seed=1)
    oracle = train.with_teacher_logit(np.log(train.prob / (1 - train.prob)))  # a perfect teacher
    student = tiny_model(6, seed=2)
    config = CONFIG.model_copy(update={"batch_size": 128, "frozen_epochs": 1, "joint_epochs": 3})
    result = distill_offline(student, oracle, config, valid=valid)
    rows = result.history()
    assert [r["phase"] for r in rows] == ["frozen", "joint", "joint", "joint"]
    assert all(np.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["valid_auc"] > 0.7 and rows[-1]["valid_auc"] > rows[0]["valid_auc"]
    assert result.seconds > 0 and all(p.seconds > 0 for p in result.phases)
    assert result.rows == 3000 and result.optimizer_state is not None


def test_without_progressive_one_joint_phase_gets_all_epochs(tiny_data, tiny_model):
    student = tiny_model(6, seed=2)
    emb0 = _snapshot(student.embedding_parameters())
    config = CONFIG.model_copy(update={"progressive": False, "frozen_epochs": 1, "joint_epochs": 2})
    result = distill_offline(student, tiny_data(300), config, teacher=tiny_model(4, seed=1))
    assert [(p.name, p.epochs) for p in result.phases] == [("joint", 3)]
    assert not _identical(emb0, student.embedding_parameters())


def test_bad_inputs_are_clear_errors(tiny_data, tiny_model):
    with pytest.raises(ValueError, match="no teacher"):
        distill_offline(tiny_model(), tiny_data(50), CONFIG)
    with pytest.raises(ValueError, match="frozen_epochs"):
        OfflineDistillConfig(frozen_epochs=0, joint_epochs=0)
    with pytest.raises(ValueError):
        OfflineDistillConfig(lambada=0.5)
    assert OfflineDistillConfig.model_validate({"lambda": 0.3}).kd_weight == 0.3


def test_adaptive_lambda_offline_falls_for_a_weak_teacher_and_holds_for_a_strong_one(tiny_data, tiny_model):
    train, valid = tiny_data(3000, seed=0), tiny_data(2000, seed=1)
    adaptive = AdaptiveKDConfig(offline_eval_every_steps=10,
                                offline=AdaptiveSchedule(ema_window=2, warmup=1, max_change=0.3))
    config = CONFIG.model_copy(update={"batch_size": 100, "frozen_epochs": 0, "joint_epochs": 4,
                                       "adaptive": adaptive})
    # Weak teacher: a constant logit 0 (LogLoss log 2); the student soon beats it by far.
    weak = train.with_teacher_logit(np.zeros(3000, np.float32))
    weak_valid = valid.with_teacher_logit(np.zeros(2000, np.float32))
    result = distill_offline(tiny_model(6, seed=2), weak, config, valid=weak_valid)
    weights = [w for _, _, w in result.kd_weight_trace]
    assert len(weights) == 12
    assert weights[-1] == pytest.approx(0.1, abs=0.02) and result.phases[-1].kd_weight_end == weights[-1]
    # Strong teacher: the generating logits; no student can beat it, λ stays at λ_max.
    logit = lambda s: np.log(s.prob / (1 - s.prob)).astype(np.float32)  # noqa: E731
    strong = distill_offline(tiny_model(6, seed=2), train.with_teacher_logit(logit(train)), config,
                             valid=valid.with_teacher_logit(logit(valid)))
    assert [w for _, _, w in strong.kd_weight_trace] == [0.7] * 12
    assert logloss_from_logits(np.zeros(4), np.array([0, 1, 0, 1])) == pytest.approx(np.log(2))


@pytest.mark.parametrize("config_class", [OfflineDistillConfig, OnlineCoDistillConfig, BaselineConfig])
def test_every_kd_config_shares_the_student_settings(config_class):
    config = config_class.model_validate({"lambda": 0.3, "batch_size": 32, "dense_lr": 0.01, "seed": 5})
    assert config.kd_weight == 0.3 and config.temperature == 4.0
    train = config.student_train_config()
    assert (train.batch_size, train.embedding_lr, train.dense_lr, train.seed) == (32, 0.1, 0.01, 5)
    assert train.patience is None and train.restore_best is False and train.progress is False
    with pytest.raises(ValidationError, match="lambada"):
        config_class(lambada=0.5)


def test_switch_config_kd_gate_defaults_to_teacher_better_keeps_the_paper_and_refuses_unknown_values():
    from crossadapt.transfer.switch_config import DistillationSection

    assert DistillationSection().kd_gate == "teacher_better"  # measured never worse (bench/README.md)
    assert DistillationSection(kd_gate="all").kd_gate == "all"  # the paper's KD on every row
    with pytest.raises(ValidationError, match="kd_gate"):
        DistillationSection(kd_gate="sometimes")
