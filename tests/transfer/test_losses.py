"""Loss terms: hand computations, minima, stability, and RKD across widths."""

from __future__ import annotations

import math

import pytest
import torch

from crossadapt.transfer.offline.losses import bce, hint_mse, kd_cross_entropy, kd_kl, rkd_angle, rkd_distance, sample_rows, teacher_better_rows


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_kd_cross_entropy_matches_hand_computation():
    z_s, z_t, temp = [0.5, -2.0, 3.0], [1.0, 0.2, -1.5], 4.0
    expected = 0.0
    for s, t in zip(z_s, z_t):
        p_t, p_s = _sigmoid(t / temp), _sigmoid(s / temp)
        expected += -(p_t * math.log(p_s) + (1 - p_t) * math.log(1 - p_s))
    expected /= 3
    got_unscaled = kd_cross_entropy(torch.tensor(z_s), torch.tensor(z_t), temp, scale_by_t2=False)
    got_scaled = kd_cross_entropy(torch.tensor(z_s), torch.tensor(z_t), temp)
    assert got_unscaled.item() == pytest.approx(expected, rel=1e-6)
    assert got_scaled.item() == pytest.approx(expected * temp**2, rel=1e-6)


def test_kd_cross_entropy_is_minimised_at_teacher_logits(one_thread):
    teacher = torch.tensor([1.3, -0.7, 2.2, 0.0])
    # Per row over a grid of student logits: the minimiser is the teacher's logit (at T = 4).
    grid = torch.linspace(-6.0, 6.0, 1201)
    for z_t in teacher:
        values = torch.stack([kd_cross_entropy(g.reshape(1), z_t.reshape(1), 4.0) for g in grid])
        assert grid[int(values.argmin())].item() == pytest.approx(z_t.item(), abs=0.011)
    at_teacher = kd_cross_entropy(teacher.clone(), teacher, 4.0)
    for delta in (0.1, -0.1, 1.0):
        assert kd_cross_entropy(teacher + delta, teacher, 4.0) > at_teacher
    # The gradient vanishes exactly at z_S = z_T (and the loss is convex in z_S): a global minimum.
    z = teacher.clone().requires_grad_(True)
    kd_cross_entropy(z, teacher, 4.0).backward()
    assert z.grad.abs().max().item() < 1e-7


def test_kd_kl_is_zero_at_equality_and_differs_from_ce_by_teacher_entropy():
    teacher = torch.tensor([1.3, -0.7, 2.2])
    student = torch.tensor([0.3, 0.1, -1.0])
    assert kd_kl(teacher.clone(), teacher, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    assert kd_kl(student, teacher, 4.0).item() > 0
    p_t = torch.sigmoid(teacher / 4.0)
    entropy = -(p_t * p_t.log() + (1 - p_t) * (1 - p_t).log()).mean() * 16.0
    diff = kd_cross_entropy(student, teacher, 4.0) - kd_kl(student, teacher, 4.0)
    assert diff.item() == pytest.approx(entropy.item(), rel=1e-5)


def test_t2_scaling_keeps_gradient_scale_across_temperatures():
    teacher = torch.tensor([2.0])
    grads = []
    for temp in (4.0, 100.0):
        z = torch.tensor([0.0], requires_grad=True)
        kd_cross_entropy(z, teacher, temp).backward()
        grads.append(z.grad.item())
    # With T² the large-T limit is logit matching: gradient -> (z_S - z_T) / 4 = -0.5.
    assert grads[1] == pytest.approx(-0.5, rel=1e-3)
    assert grads[0] == pytest.approx(grads[1], rel=0.05)


def test_losses_are_finite_for_extreme_logits():
    big = torch.tensor([80.0, -80.0, 1e4, -1e4], requires_grad=True)
    teacher = torch.tensor([-80.0, 80.0, -1e4, 1e4])
    labels = torch.tensor([0.0, 1.0, 0.0, 1.0])
    total = bce(big, labels) + kd_cross_entropy(big, teacher, 1.0) + kd_kl(big, teacher, 1.0)
    total.backward()
    assert torch.isfinite(total) and torch.isfinite(big.grad).all()
    assert bce(torch.tensor([0.0]), torch.tensor([1.0])).item() == pytest.approx(math.log(2))


def test_kd_losses_do_not_move_the_teacher():
    teacher = torch.tensor([1.0, -1.0], requires_grad=True)
    student = torch.tensor([0.0, 0.0], requires_grad=True)
    (kd_cross_entropy(student, teacher, 2.0) + kd_kl(student, teacher, 2.0)).backward()
    assert teacher.grad is None and student.grad is not None


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="shape"):
        kd_cross_entropy(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="temperature"):
        kd_kl(torch.zeros(3), torch.zeros(3), temperature=0.0)
    with pytest.raises(ValueError, match="shape"):
        hint_mse(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))


def test_hint_mse_hand_value():
    a = torch.tensor([[[1.0, 2.0]], [[0.0, 0.0]]])
    b = torch.tensor([[[0.0, 2.0]], [[2.0, 0.0]]])
    assert hint_mse(a, b).item() == pytest.approx((1 + 0 + 4 + 0) / 4)


def test_rkd_works_across_widths_and_is_invariant_to_similarities():
    gen = torch.Generator().manual_seed(0)
    teacher = torch.randn(16, 4, generator=gen)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=gen))
    # Student = a scaled, rotated, translated copy of the teacher embedded in 8 dims: same relations.
    student = 3.0 * torch.cat([teacher, torch.zeros(16, 4)], 1) @ rotation + 5.0
    assert rkd_distance(student, teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert rkd_angle(student, teacher).item() == pytest.approx(0.0, abs=1e-6)
    unrelated = torch.randn(16, 8, generator=gen, requires_grad=True)
    loss = rkd_distance(unrelated, teacher) + rkd_angle(unrelated, teacher)
    assert loss.item() > 1e-3
    loss.backward()
    assert torch.isfinite(unrelated.grad).all() and unrelated.grad.abs().sum() > 0


@pytest.fixture
def one_thread():
    """Tiny tensors: one thread avoids spin-waiting on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_rkd_gradient_reduces_the_loss_across_widths(one_thread):
    gen = torch.Generator().manual_seed(1)
    teacher = torch.randn(12, 3, generator=gen)
    student = torch.randn(12, 7, generator=gen, requires_grad=True)
    opt = torch.optim.Adam([student], lr=0.05)
    first = None
    for _ in range(100):
        opt.zero_grad()
        loss = rkd_distance(student, teacher) + 2.0 * rkd_angle(student, teacher)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * first


def test_rkd_subsampling_bounds_the_rows():
    assert sample_rows(10, 64) is None
    gen = torch.Generator().manual_seed(0)
    rows = sample_rows(1000, 32, gen)
    assert rows.shape == (32,) and rows.unique().numel() == 32 and int(rows.max()) < 1000
    student, teacher = torch.randn(1000, 5), torch.randn(1000, 9)
    value = rkd_angle(student, teacher, rows=rows)
    expected = rkd_angle(student[rows], teacher[rows])
    assert value.item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="rows"):
        rkd_distance(torch.randn(4, 2), torch.randn(5, 2))


def test_teacher_better_rows_marks_rows_the_teacher_predicts_better_and_weights_scale_the_kd_term():
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    student = torch.tensor([2.0, -2.0, -1.0, 1.0])  # right, right, wrong, wrong
    teacher = torch.tensor([1.0, -3.0, 1.0, -1.0])  # less sure, surer, right, right
    rows = teacher_better_rows(student, teacher, labels)
    assert rows.tolist() == [0.0, 1.0, 1.0, 1.0]
    per_row = [kd_cross_entropy(student[i:i + 1], teacher[i:i + 1], 2.0).item() for i in range(4)]
    weighted = kd_cross_entropy(student, teacher, 2.0, row_weights=rows).item()
    assert weighted == pytest.approx(sum(per_row[1:]) / 4, rel=1e-6)  # divided by B, not by the kept rows
    assert kd_kl(student, teacher, 2.0, row_weights=torch.zeros(4)).item() == 0.0
    with pytest.raises(ValueError, match="row_weights"):
        kd_cross_entropy(student, teacher, 2.0, row_weights=torch.ones(3))
