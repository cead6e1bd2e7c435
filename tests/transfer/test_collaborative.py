"""Collaborative co-distillation: the teacher's KD term toward the student, its row weights, and its effect."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from crossadapt.data import SplitArrays
from crossadapt.data.batch import Batch
from crossadapt.metrics import auc
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.spec import CategoricalField, FeatureSpec
from crossadapt.training import TrainConfig, predict_logits
from crossadapt.training.trainer import Trainer
from crossadapt.transfer.online.codistillation import OnlineCoDistillConfig, codistill_online
from crossadapt.transfer.online.collaborative import (
    CollaborativeConfig,
    CollaborativeTeacher,
    collaboration_weights,
    teacher_collaborative_loss,
)


def _bce(z: float, y: float) -> float:
    return -(y * math.log(1 / (1 + math.exp(-z))) + (1 - y) * math.log(1 / (1 + math.exp(z))))


TEACHER = torch.tensor([2.0, -1.0, 0.5, 0.0])
STUDENT = torch.tensor([-1.0, -3.0, 0.5, 1.0])
LABELS = torch.tensor([0.0, 0.0, 1.0, 1.0])


def test_student_better_gate_keeps_the_rows_where_the_student_loss_is_lower():
    # row 0: teacher 2.0 on a 0 label (bad), student -1.0 (good); row 1: both right, student more so;
    # row 2: a tie (not strictly better); row 3: student 1.0 beats teacher 0.0 on a 1 label.
    weights = collaboration_weights(TEACHER, STUDENT, LABELS, "student_better")
    assert weights.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert collaboration_weights(STUDENT, TEACHER, LABELS, "student_better").tolist() == [0.0, 0.0, 0.0, 0.0]
    assert collaboration_weights(TEACHER, STUDENT, LABELS, "all").tolist() == [1.0] * 4


def test_gap_gate_is_the_relative_loss_gap_clipped_to_0_1():
    weights = collaboration_weights(TEACHER, STUDENT, LABELS, "gap")
    expected = []
    for z_t, z_s, y in zip(TEACHER.tolist(), STUDENT.tolist(), LABELS.tolist()):
        l_t, l_s = _bce(z_t, y), _bce(z_s, y)
        expected.append(min(max((l_t - l_s) / l_t, 0.0), 1.0))
    assert weights.tolist() == pytest.approx(expected, abs=1e-6)
    assert 0.0 < weights[0] < 1.0 and weights[2] == 0.0
    # the student worse on every row: nothing teaches the teacher
    assert collaboration_weights(STUDENT, TEACHER, LABELS, "gap").abs().sum() == 0.0


def test_teacher_loss_is_bce_plus_weighted_kd_toward_the_student():
    config = CollaborativeConfig(weight=0.5, temperature=2.0)
    weights = torch.tensor([1.0, 0.0, 0.25, 1.0])
    teacher = TEACHER.clone().requires_grad_(True)
    loss = teacher_collaborative_loss(teacher, LABELS, STUDENT, weights, config)
    expected = 0.0
    for z_t, z_s, y, a in zip(TEACHER.tolist(), STUDENT.tolist(), LABELS.tolist(), weights.tolist()):
        p_s = 1 / (1 + math.exp(-z_s / 2.0))  # the soft target: the student at T
        expected += (_bce(z_t, y) + 0.5 * a * 4.0 * _bce(z_t / 2.0, p_s)) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    # d/dz_T: (σ(z_T) - y)/B + μ a T² (σ(z_T/T) - σ(z_S/T)) / (T B); the student side gets no gradient
    sig = torch.sigmoid
    grad = (sig(TEACHER) - LABELS) / 4 + 0.5 * weights * 4.0 * (sig(TEACHER / 2) - sig(STUDENT / 2)) / (2.0 * 4)
    assert torch.allclose(teacher.grad, grad, atol=1e-6)


def _spec() -> FeatureSpec:
    return FeatureSpec(categorical=(CategoricalField(name="user", vocab_size=81), CategoricalField(name="item", vocab_size=21)))


def _model(seed: int, base_rate: float = 0.3) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [16],
                                 "embedding_init_std": 0.05})
    return build_model(config, _spec(), base_rate=base_rate)


@pytest.mark.parametrize("gate", ["student_better", "gap"])
def test_deferred_window_equals_per_batch_accumulation(gate):
    """The one backward over the kept batches gives the sum of the per-batch gradients."""
    rng = np.random.default_rng(0)
    batches = [Batch(categorical=torch.from_numpy(np.stack([rng.integers(0, 81, 32), rng.integers(0, 21, 32)], 1)),
                     numerical=torch.zeros(32, 0), label=torch.from_numpy((rng.random(32) < 0.4).astype(np.float32)))
               for _ in range(3)]
    students = [torch.from_numpy(rng.normal(0, 1.5, 32).astype(np.float32)) for _ in range(3)]
    grads = []
    for deferred in (True, False):
        teacher = CollaborativeTeacher(_model(1), CollaborativeConfig(gate=gate), interval=3, optimizer="sgd",
                                       embedding_lr=0.1, dense_lr=0.1, deferred=deferred)
        for batch, student in zip(batches, students):
            logits, _ = teacher.logits_and_features(batch)
            teacher.accumulate(logits, batch.label, batch, student_logits=student)
        if deferred:
            teacher._backward_kept()
        grads.append([p.grad.clone() for p in teacher.model.parameters() if p.numel()])
        assert 0.0 < teacher.taught_share < 1.0
    for deferred_grad, step_grad in zip(*grads):
        assert torch.allclose(deferred_grad, step_grad, atol=1e-6)


def test_collaboration_needs_the_student_logits_and_a_learning_teacher():
    teacher = CollaborativeTeacher(_model(1), CollaborativeConfig(), interval=1, optimizer="adam",
                                   embedding_lr=0.1, dense_lr=0.1)
    batch = Batch(categorical=torch.ones(4, 2, dtype=torch.long), numerical=torch.zeros(4, 0), label=torch.ones(4))
    with pytest.raises(ValueError, match="student's logits"):
        teacher.accumulate(teacher.logits_and_features(batch)[0], batch.label, batch)
    with pytest.raises(ValidationError, match="co_evolution"):
        OnlineCoDistillConfig(collaborative=CollaborativeConfig(), co_evolution=False)
    with pytest.raises(ValidationError, match="gate"):
        CollaborativeConfig(gate="teacher_better")


# -- the effect: a stream where new users appear only online ----------------------------------------------------

OLD_USERS, NEW_USERS = np.arange(1, 41), np.arange(41, 81)
_WORLD = np.random.default_rng(0)
USER_EFFECT, ITEM_EFFECT = _WORLD.normal(0, 1.5, 81), _WORLD.normal(0, 0.7, 21)


def _rows(n: int, users: np.ndarray, seed: int, start: int = 0) -> SplitArrays:
    rng = np.random.default_rng(seed)
    user, item = rng.choice(users, n), rng.integers(1, 21, n)
    p = 1 / (1 + np.exp(-(USER_EFFECT[user] + ITEM_EFFECT[item] - 1.0)))
    return SplitArrays(categorical=np.stack([user, item], 1).astype(np.int64), numerical=np.zeros((n, 0), np.float32),
                       label=(rng.random(n) < p).astype(np.float32), timestamp=np.arange(start, start + n),
                       prob=p.astype(np.float32))


def test_teacher_improves_on_users_that_appear_only_in_the_stream_and_more_with_collaboration():
    train = _rows(8000, OLD_USERS, 1)  # the teacher's history: old users only
    stream = _rows(4000, np.concatenate([OLD_USERS, NEW_USERS]), 2, start=10**6)
    new_only = _rows(4000, NEW_USERS, 3)  # held-out rows of the users the teacher never saw
    teacher = _model(0, float(train.label.mean()))
    Trainer(teacher, TrainConfig(epochs=3, batch_size=128, embedding_lr=0.05, dense_lr=1e-2, progress=False,
                                 patience=None)).fit(train)

    def new_user_auc(model: torch.nn.Module) -> float:
        return auc(new_only.label, predict_logits(model, new_only))

    before = new_user_auc(teacher)
    after = {}
    for name, collaborative in (("plain", None), ("collaborative", CollaborativeConfig())):
        config = OnlineCoDistillConfig(batch_size=64, embedding_lr=0.05, dense_lr=1e-2, teacher_embedding_lr=0.05,
                                       teacher_dense_lr=1e-2, teacher_update_interval=10, collaborative=collaborative)
        result = codistill_online(copy.deepcopy(teacher), _model(10, float(train.label.mean())), stream, config)
        after[name] = new_user_auc(result.teacher)
        if collaborative is not None:
            # the student taught the teacher on part of the stream only (where it was better)
            assert 0.2 < result.collaboration_share < 0.8
        else:
            assert result.collaboration_share is None
    # measured: before 0.614, plain 0.784, collaborative 0.791 (the oracle reaches 0.838)
    assert after["plain"] > before + 0.1
    assert after["collaborative"] > after["plain"] + 0.004


def test_a_collaborative_codistiller_resumes_bit_for_bit(tiny_data, tiny_model):
    """The kept batches' student targets and weights are part of the saved state (cut inside a τ-window)."""
    import io

    from crossadapt.transfer.online.codistillation import build_codistiller

    stream = tiny_data(600, seed=3)
    config = OnlineCoDistillConfig(batch_size=50, teacher_update_interval=4, num_threads=1, window_batches=4,
                                   collaborative=CollaborativeConfig(gate="gap"))
    chunks = [stream.slice(i, i + 50) for i in range(0, len(stream), 50)]

    def build(student_seed: int = 2, teacher_seed: int = 1):  # noqa: ANN202
        return build_codistiller(tiny_model(4, seed=teacher_seed), tiny_model(6, seed=student_seed), config)

    reference = build()
    for chunk in chunks:
        reference.consume(chunk)
    expected = reference.finish()
    first = build()
    for chunk in chunks[:6]:
        first.consume(chunk)
    buffer = io.BytesIO()
    torch.save({"state": first.state_dict(), "student": first.trainer.model.state_dict(),
                "teacher": first.teacher.model.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    second = build(student_seed=8, teacher_seed=9)
    second.trainer.model.load_state_dict(saved["student"])
    second.teacher.model.load_state_dict(saved["teacher"])
    second.load_state_dict(saved["state"])
    for chunk in chunks[6:]:
        second.consume(chunk)
    result = second.finish()
    for ours, theirs in ((result.student, expected.student), (result.teacher, expected.teacher)):
        for name, value in theirs.state_dict().items():
            assert torch.equal(ours.state_dict()[name], value), name
    assert result.collaboration_share == pytest.approx(expected.collaboration_share)


def test_switch_config_option_is_typed_and_refused_where_the_teacher_cannot_learn():
    from crossadapt.transfer.switch_config import ConfigError, parse_switch_config

    base = {"data": {"synthetic": {"preset": "small", "rows": 2000}}}
    config = parse_switch_config({**base, "online": {"collaborative": {"gate": "gap", "weight": 0.5}}})
    assert config.online.collaborative == CollaborativeConfig(gate="gap", weight=0.5)
    assert parse_switch_config(base).online.collaborative is None  # default off: the paper's teacher
    with pytest.raises(ConfigError, match="online.collaborative.gate"):
        parse_switch_config({**base, "online": {"collaborative": {"gate": "sometimes"}}})
    with pytest.raises(ConfigError, match="co_evolution"):
        parse_switch_config({**base, "online": {"collaborative": {}}, "ablation": {"co_evolution": False}})
