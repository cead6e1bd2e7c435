"""Online asymmetric co-distillation: teacher schedule, gradient sum, order, partial window, prequential, replay."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from crossadapt.data import SplitArrays, iter_batches
from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig, AdaptiveSchedule
from crossadapt.transfer.online.codistillation import (
    OnlineCoDistillConfig,
    build_codistiller,
    codistill_online,
    forward_is_deterministic,
)
from crossadapt.transfer.online.replay import ReplayConfig, ReplayController


def _params(model) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def _config(**update) -> OnlineCoDistillConfig:
    base = dict(batch_size=20, teacher_update_interval=3, window_batches=4, num_threads=1)
    return OnlineCoDistillConfig(**{**base, **update})


def _stream_step_by_step(distiller, stream: SplitArrays, batch_size: int, before=None, after=None) -> None:
    for t, batch in enumerate(iter_batches(stream, batch_size), start=1):
        if before:
            before(t, batch)
        distiller.train_batch(batch)
        if after:
            after(t, batch)


@pytest.mark.parametrize("policy", ["drop", "flush"])
def test_teacher_changes_only_every_tau_batches_and_partial_window_follows_policy(tiny_data, tiny_model, policy):
    teacher, student = tiny_model(4, 1), tiny_model(6, 2)
    distiller = build_codistiller(teacher, student, _config(partial_window=policy))
    changed: list[int] = []
    state = {"last": _params(teacher)}

    def after(t, _):
        now = _params(teacher)
        if not _same(state["last"], now):
            changed.append(t)
        state["last"] = now

    _stream_step_by_step(distiller, tiny_data(220), 20, after=after)  # 11 batches
    assert changed == [3, 6, 9]
    result = distiller.finish()
    assert result.partial_window == policy and result.partial_window_batches == 2
    flushed = not _same(state["last"], _params(teacher))
    assert flushed == (policy == "flush")
    assert result.teacher_update_steps == ([3, 6, 9, 11] if policy == "flush" else [3, 6, 9])
    assert all(p.grad is None for p in teacher.parameters())  # nothing left pending either way


def test_accumulated_teacher_gradient_is_the_sum_of_per_step_gradients(tiny_data, tiny_model):
    teacher, student = tiny_model(4, 1), tiny_model(6, 2)
    theta0 = copy.deepcopy(teacher)
    lr_emb, lr_dense = 0.5, 0.05
    config = _config(teacher_optimizer="sgd", teacher_embedding_lr=lr_emb, teacher_dense_lr=lr_dense)
    distiller = build_codistiller(teacher, student, config)
    stream = tiny_data(60)  # exactly τ = 3 batches
    _stream_step_by_step(distiller, stream, 20)
    # Manual: sum of ∇ BCE at θ0 (eval mode) over the three batches, then one plain step.
    theta0.eval()
    grads = [torch.zeros_like(p) for p in theta0.parameters()]
    for batch in iter_batches(stream, 20):
        theta0.zero_grad()
        F.binary_cross_entropy_with_logits(theta0(batch.categorical, batch.numerical), batch.label).backward()
        grads = [g + p.grad for g, p in zip(grads, theta0.parameters())]
    embedding_ids = {id(p) for p in theta0.embedding_parameters()}
    for (p0, g, p1) in zip(theta0.parameters(), grads, teacher.parameters()):
        lr = lr_emb if id(p0) in embedding_ids else lr_dense
        torch.testing.assert_close(p1.detach(), p0.detach() - lr * g, rtol=1e-5, atol=1e-6)
    assert distiller.teacher.update_steps == [3]


def test_stream_is_consumed_in_time_order_once_and_unordered_streams_are_rejected(tiny_data, tiny_model):
    teacher, student = tiny_model(4, 1), tiny_model(6, 2)
    distiller = build_codistiller(teacher, student, _config())
    seen: list[np.ndarray] = []
    original = distiller.trainer.train_step
    distiller.trainer.train_step = lambda batch: (seen.append(batch.timestamp.numpy().copy()), original(batch))[1]
    stream = tiny_data(130)
    distiller.consume(stream)
    result = distiller.finish()
    order = np.concatenate(seen)
    np.testing.assert_array_equal(order, np.arange(130))
    labels, _, _ = distiller.recorder.logits()
    np.testing.assert_array_equal(labels, stream.label)
    assert result.batches == 7 and result.rows == 130
    shuffled = stream.take(np.r_[5, 0:5, 6:130])
    with pytest.raises(ValueError, match="time order"):
        build_codistiller(tiny_model(4, 1), tiny_model(6, 2), _config()).consume(shuffled)


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_prequential_predictions_are_made_before_training_on_the_batch(tiny_data, tiny_model, dropout):
    teacher, student = tiny_model(4, 1), tiny_model(6, 2, dropout=dropout)
    assert forward_is_deterministic(student) == (dropout == 0.0)
    distiller = build_codistiller(teacher, student, _config(teacher_update_interval=1))
    expected_s, expected_t = [], []

    def before(t, batch):
        with torch.no_grad():
            student.eval(), teacher.eval()
            expected_s.append(student(batch.categorical, batch.numerical))
            expected_t.append(teacher(batch.categorical, batch.numerical))
            student.train()

    stream = tiny_data(100)
    _stream_step_by_step(distiller, stream, 20, before=before)
    distiller.finish()
    _, got_s, got_t = distiller.recorder.logits()
    np.testing.assert_allclose(got_s, torch.cat(expected_s).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_t, torch.cat(expected_t).numpy(), rtol=1e-5, atol=1e-6)
    # And they are not the after-update predictions: both models moved.
    with torch.no_grad():
        student.eval()
        last = student(*[torch.from_numpy(a) for a in (stream.categorical[-20:], stream.numerical[-20:])])
    assert not np.allclose(last.numpy(), got_s[-20:])


def test_replay_appends_ratio_times_batch_rows_from_the_pool(tiny_data, tiny_model):
    pool = tiny_data(500, seed=7)
    replay = ReplayController(ReplayConfig(max_ratio=0.25), len(pool), seed=0, initial_shift=0.0)
    assert replay.ratio == pytest.approx(0.25)
    teacher, student = tiny_model(4, 1), tiny_model(6, 2)
    distiller = build_codistiller(teacher, student, _config(batch_size=40), replay=replay, replay_pool=pool)
    sizes, heads = [], []
    original = distiller.trainer.train_step
    distiller.trainer.train_step = lambda b: (sizes.append(len(b)), heads.append(b.timestamp[:40].clone()),
                                              original(b))[2]
    stream = tiny_data(200)
    distiller.consume(stream)
    result = distiller.finish()
    assert sizes == [50] * 5 and result.replay_rows == 50
    np.testing.assert_array_equal(torch.cat(heads).numpy(), stream.timestamp)  # stream rows first, in order
    assert result.rows == 200 and result.windows[0].replay_ratio == pytest.approx(0.25)


def test_ablation_switches(tiny_data, tiny_model):
    stream = tiny_data(120)
    frozen_teacher = tiny_model(4, 1)
    before = _params(frozen_teacher)
    result = codistill_online(frozen_teacher, tiny_model(6, 2), stream, _config(co_evolution=False))
    assert _same(before, _params(frozen_teacher)) and result.teacher_update_steps == []
    result = codistill_online(tiny_model(4, 1), tiny_model(6, 2), stream, _config(asymmetric=False))
    assert result.teacher_update_steps == [1, 2, 3, 4, 5, 6]
    distiller = build_codistiller(tiny_model(4, 1), tiny_model(6, 2), _config(distillation=False))
    assert distiller.trainer.kd_weight == 0.0


def test_windows_and_totals_are_consistent(tiny_data, tiny_model):
    stream, holdout = tiny_data(230), tiny_data(100, seed=9)
    result = codistill_online(tiny_model(4, 1), tiny_model(6, 2), stream, _config(window_batches=4), holdout=holdout,
                              holdout_every_windows=2)
    assert result.batches == 12 and [w.rows for w in result.windows] == [80, 80, 70]
    assert [(w.first_batch, w.last_batch) for w in result.windows] == [(1, 4), (5, 8), (9, 12)]
    seconds = [w.seconds for w in result.windows]
    assert seconds == sorted(seconds) and seconds[-1] <= result.seconds
    assert [w.teacher_updates for w in result.windows] == [1, 2, 4]
    for key in ("auc", "logloss"):
        assert 0 < result.student_prequential[key] < 1.5 and 0 < result.teacher_prequential[key] < 1.5
    xs, ys = result.curve()
    assert len(xs) == len(ys) == 3
    assert [w.holdout is not None for w in result.windows] == [False, True, True]  # every 2nd, and the end
    assert result.windows[-1].holdout["rows"] == 100


def test_adaptive_lambda_online_falls_when_the_student_is_better_and_scales_replay(tiny_data, tiny_model):
    stream, pool = tiny_data(2000, seed=3), tiny_data(400, seed=4)
    trained = tiny_model(6, 2)
    codistill_online(tiny_model(4, 1), trained, tiny_data(3000, seed=5),
                     _config(batch_size=50, distillation=False, co_evolution=False))
    adaptive = AdaptiveKDConfig(online=AdaptiveSchedule(ema_window=5, warmup=2, max_change=0.1))
    config = _config(batch_size=50, co_evolution=False, adaptive=adaptive)
    # A trained student against an untrained teacher: λ falls, and the replay share with it.
    replay = ReplayController(ReplayConfig(max_ratio=0.2), len(pool), seed=0, initial_shift=0.0)
    weak = codistill_online(tiny_model(4, 1), copy.deepcopy(trained), stream, config, replay=replay, replay_pool=pool)
    assert weak.kd_weight_trace[-1][2] == pytest.approx(0.1, abs=0.02)
    assert replay.ratio == pytest.approx(0.1, abs=0.01)  # 0.2 * replay_floor 0.5
    # The roles swapped: the teacher is the better model, λ stays at λ_max.
    strong = codistill_online(copy.deepcopy(trained), tiny_model(4, 1), stream, config)
    assert max(w for _, _, w in strong.kd_weight_trace) == pytest.approx(0.7)
    assert min(w for _, _, w in strong.kd_weight_trace) == pytest.approx(0.7)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("policy", ["drop", "flush"])
def test_deferred_teacher_gradient_matches_per_step_accumulation(tiny_data, tiny_model, optimizer, policy):
    from crossadapt.transfer.online.teacher_schedule import AsymmetricTeacher

    eager_model = tiny_model(4, 1)
    deferred_model = copy.deepcopy(eager_model)
    kwargs = dict(interval=3, optimizer=optimizer, embedding_lr=0.3, dense_lr=0.03)
    eager = AsymmetricTeacher(eager_model, deferred=False, **kwargs)
    deferred = AsymmetricTeacher(deferred_model, **kwargs)
    assert deferred.deferred and not eager.deferred
    # Unequal batches (the last is short; replay makes batches of other sizes): every batch's mean counts once.
    batches = list(iter_batches(tiny_data(213), 20))  # 11 batches, the last of 13 rows: 2 pending at the end
    assert len(batches) == 11 and len(batches[-1]) == 13
    for t, batch in enumerate(batches, start=1):
        for teacher in (eager, deferred):
            logits, _ = teacher.logits_and_features(batch)
            teacher.accumulate(logits, batch.label, batch)
            teacher.maybe_step(t)
        torch.testing.assert_close(_params(deferred_model), _params(eager_model), rtol=1e-5, atol=1e-6)
    for teacher in (eager, deferred):
        teacher.finish(len(batches), policy)
    torch.testing.assert_close(_params(deferred_model), _params(eager_model), rtol=1e-5, atol=1e-6)
    assert deferred.update_steps == eager.update_steps == ([3, 6, 9] if policy == "drop" else [3, 6, 9, 11])
    assert all(p.grad is None for p in deferred_model.parameters())
    assert deferred.pending == 0


def test_deferred_teacher_forward_builds_no_graph_and_needs_the_batch(tiny_data, tiny_model):
    from crossadapt.transfer.online.teacher_schedule import AsymmetricTeacher

    teacher = AsymmetricTeacher(tiny_model(4, 1), interval=3, optimizer="adam", embedding_lr=0.1, dense_lr=1e-3)
    batch = next(iter(iter_batches(tiny_data(40), 20)))
    logits, _ = teacher.logits_and_features(batch)
    assert not logits.requires_grad  # KD targets only; the gradient is taken once per window
    with pytest.raises(ValueError, match="needs the batch"):
        teacher.accumulate(logits, batch.label)
    # τ = 1 (the KD baselines) keeps the per-step backward: deferring would cost a second forward.
    assert not AsymmetricTeacher(tiny_model(4, 1), interval=1, optimizer="adam", embedding_lr=0.1, dense_lr=1e-3).deferred
