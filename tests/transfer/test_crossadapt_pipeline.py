"""`run_crossadapt`: how the Table 2 switches combine inside the one pipeline."""

from __future__ import annotations

import numpy as np
import torch

from crossadapt.models import parse_model_config
from crossadapt.transfer.experiments.methods import MethodContext, _fresh_student, run_crossadapt
from crossadapt.transfer.projection import project_model_embeddings
from crossadapt.transfer.switch_config import AblationSection, OfflineSection, OptimSection


def _context(tiny_data, tiny_model, spec) -> MethodContext:
    rows = tiny_data(1500)
    splits = {"train": rows.take(np.arange(1000)), "online": rows.take(np.arange(1000, 1500))}
    return MethodContext(
        splits=splits,
        feature_spec=spec,
        teacher=tiny_model(4, seed=1),
        student_config=parse_model_config({"architecture": "mlp", "embedding_dim": 6, "hidden_units": [8]}),
        offline=OfflineSection(sampling={"ratio": 0.5, "temporal_blocks": 2},
                               distillation={"frozen_epochs": 1, "joint_epochs": 0}),
        optim=OptimSection(batch_size=64),
        threads=1,
    )


def _tables(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.embedding_parameters()]


def test_projected_tables_are_frozen_in_phase_one(tiny_data, tiny_model, tiny_spec) -> None:
    ctx = _context(tiny_data, tiny_model, tiny_spec)
    outcome = run_crossadapt(ctx, AblationSection(online_stage=False))
    assert outcome.details["offline_phases"] == ["frozen"]
    projected = _tables(outcome.model)
    # Re-projecting the same teacher into a fresh student gives the tables phase 1 must have kept.
    reference = _fresh_student(ctx)
    project_model_embeddings(ctx.teacher, reference, seed=ctx.seed)
    assert all(torch.equal(a, b) for a, b in zip(projected, _tables(reference)))


def test_without_projection_the_random_tables_are_trained_not_frozen(tiny_data, tiny_model, tiny_spec) -> None:
    # Freezing a random init (std 1e-4) for phase 1 killed narrow MLP students in Table 3's "w/o ETP".
    ctx = _context(tiny_data, tiny_model, tiny_spec)
    initial = _tables(_fresh_student(ctx))
    outcome = run_crossadapt(ctx, AblationSection(projection=False, online_stage=False))
    assert outcome.details["offline_phases"] == ["joint"]
    assert all(not torch.equal(a, b) for a, b in zip(initial, _tables(outcome.model)))


def test_rolling_drift_from_the_switch_config_changes_the_online_replay(tiny_data, tiny_model, tiny_spec) -> None:
    """`online.drift.rolling` reaches the replay controller: the stream's windows re-estimate r_enh,
    so the online stage replays a different number of rows than with the training pool's fixed r_enh."""
    from crossadapt.transfer.switch_config import OnlineSection

    fixed = _context(tiny_data, tiny_model, tiny_spec)
    fixed.online = OnlineSection(drift={"windows": 4, "bins": 8, "max_replay": 0.5})
    rolling = _context(tiny_data, tiny_model, tiny_spec)
    rolling.online = OnlineSection(drift={"windows": 4, "bins": 8, "max_replay": 0.5, "rolling": True,
                                          "window_rows": 100})
    replayed = [run_crossadapt(ctx, AblationSection()).details["replay_rows"] for ctx in (fixed, rolling)]
    assert replayed[0] != replayed[1], replayed


def test_grow_vocabulary_from_the_switch_config_grows_the_tables_on_new_online_ids(
        tiny_data, tiny_model, tiny_spec) -> None:
    """`online.grow_vocabulary` reaches co-distillation: online ids beyond the tables (a newer vocabulary
    version) get rows in the student; without it they read as <UNK> and the tables keep their size."""
    from crossadapt.transfer.switch_config import OnlineSection

    sizes = {}
    for grow in (False, True):
        ctx = _context(tiny_data, tiny_model, tiny_spec)
        online = ctx.splits["online"]
        online.categorical[::3, 0] = 30 + np.arange(len(online))[::3] % 10  # user ids 30..39 are new
        ctx.online = OnlineSection(grow_vocabulary=grow)
        sizes[grow] = run_crossadapt(ctx, AblationSection()).details["vocabulary_sizes"]
    assert sizes[False] == {"user": 30, "item": 12}
    assert sizes[True] == {"user": 40, "item": 12}


def test_pcvr_options_change_the_sample_the_targets_and_the_online_rows(tiny_data, tiny_model, tiny_spec) -> None:
    """`offline.sampling.target: conversion` samples the clicked rows balanced by conversion and streams only
    clicked rows online; `unclicked_ratio` adds unclicked exposures (labelled with the teacher's pCVR)."""
    from dataclasses import replace

    rows = tiny_data(1500)
    rng = np.random.default_rng(4)
    rows = replace(rows, conversion=(rows.label * (rng.random(len(rows)) < 0.3)).astype(np.float32))
    splits = {"train": rows.take(np.arange(1000)), "online": rows.take(np.arange(1000, 1500))}
    details = {}
    for label, sampling in {"click": {}, "conversion": {"target": "conversion"},
                            "augmented": {"target": "conversion", "unclicked_ratio": 0.5}}.items():
        ctx = _context(tiny_data, tiny_model, tiny_spec)
        ctx.splits = splits
        ctx.offline = OfflineSection(sampling={"ratio": 0.5, "temporal_blocks": 2, **sampling},
                                     distillation={"frozen_epochs": 1, "joint_epochs": 0})
        details[label] = run_crossadapt(ctx, AblationSection()).details
    clicked_online = int(splits["online"].label.sum())
    assert details["click"]["online_rows"] == 500 and details["conversion"]["online_rows"] == clicked_online
    assert "unclicked_rows" not in details["click"] and details["conversion"]["unclicked_rows"] == 0
    clicked_sample = details["conversion"]["sample_rows"]
    assert clicked_sample <= int(splits["train"].label.sum())  # drawn among clicked rows only
    assert abs(details["conversion"]["sample_positive_rate"] - 0.5) < 0.05  # balanced by conversion
    assert details["augmented"]["unclicked_rows"] == round(0.5 * clicked_sample)
    assert details["augmented"]["sample_rows"] == clicked_sample + details["augmented"]["unclicked_rows"]


def test_pcvr_rows_label_unclicked_exposures_with_the_teachers_pcvr(tiny_data) -> None:
    from dataclasses import replace

    from crossadapt.transfer.offline.unclicked import pcvr_training_rows

    rows = tiny_data(200)
    rows = replace(rows, conversion=(rows.label * (np.arange(200) % 2)).astype(np.float32))
    clicked, unclicked = np.flatnonzero(rows.label > 0)[:10], np.flatnonzero(rows.label == 0)[:4]
    logits = np.array([-2.0, 0.0, 1.0, 3.0], np.float32)
    out = pcvr_training_rows(rows, clicked, unclicked, logits)
    assert np.array_equal(out.conversion[:10], rows.conversion[clicked])
    np.testing.assert_allclose(out.conversion[10:], 1 / (1 + np.exp(-logits)), rtol=1e-6)
    assert np.array_equal(out.categorical, rows.categorical[np.concatenate([clicked, unclicked])])


def test_the_teachers_online_embedding_steps_follow_the_students_embedding_lr(tiny_data, tiny_model,
                                                                               tiny_spec) -> None:
    """Adam moves a parameter by at most ~lr per step, so after U teacher updates no teacher table entry has
    moved by more than U × its embedding lr. The teacher learns online at the student's (batch-fitted)
    embedding lr unless `online.teacher_embedding_lr` says otherwise; a fixed 0.1 at a small batch moved
    its rows ~30x too far and made it worse over the long-history stream."""
    from crossadapt.transfer.switch_config import OnlineSection

    moved = {}
    for teacher_lr in (None, 0.05):
        ctx = _context(tiny_data, tiny_model, tiny_spec)
        ctx.optim = OptimSection(batch_size=64, embedding_lr=1e-3)
        ctx.online = OnlineSection(teacher_update_interval=2, teacher_embedding_lr=teacher_lr)
        before = _tables(ctx.teacher)
        outcome = run_crossadapt(ctx, AblationSection())
        updates = outcome.details["teacher_updates"]
        assert updates >= 3
        moved[teacher_lr] = max(float((b - a).abs().max()) for a, b in zip(before, _tables(outcome.teacher)))
        assert moved[teacher_lr] <= updates * (teacher_lr or 1e-3) * 1.05
    assert moved[0.05] > 10 * moved[None] > 0
