"""`run_crossadapt`: how the Table 2 switches combine inside the one pipeline."""

from __future__ import annotations

import numpy as np
import torch

from crossadapt.models import parse_model_config
from crossadapt.transfer.methods import MethodContext, _fresh_student, run_crossadapt
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
