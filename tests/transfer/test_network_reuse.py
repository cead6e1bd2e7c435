"""A student of the teacher's own network starts from the teacher's weights (crossadapt.transfer.network_reuse)."""

from __future__ import annotations

import numpy as np
import torch

from crossadapt.data import SplitArrays
from crossadapt.models import parse_model_config
from crossadapt.transfer.experiments.methods import MethodContext, run_crossadapt
from crossadapt.transfer.network_reuse import reuse_teacher_network
from crossadapt.transfer.projection import project_model_embeddings
from crossadapt.transfer.switch_config import AblationSection, OfflineSection, OptimSection, parse_switch_config


def _logits(model: torch.nn.Module, rows: SplitArrays) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.as_tensor(rows.categorical), torch.as_tensor(rows.numerical))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.clone() for name, value in model.state_dict().items()}


def test_an_identical_network_makes_the_projected_student_the_teacher(tiny_model, tiny_data) -> None:
    teacher, student = tiny_model(4, seed=1, hidden=(8, 4)), tiny_model(4, seed=2, hidden=(8, 4))
    teacher.set_base_rate(0.2)  # the logit offset is part of the network the student takes
    rows = tiny_data(300)
    assert not torch.allclose(_logits(teacher, rows), _logits(student, rows))

    project_model_embeddings(teacher, student)
    reuse = reuse_teacher_network(teacher, student)

    assert reuse.reused and reuse.reason == ""
    assert reuse.copied == sorted(name for name in teacher.state_dict() if not name.startswith("embedding."))
    assert torch.equal(_logits(teacher, rows), _logits(student, rows))


def test_another_width_or_architecture_leaves_the_student_untouched(tiny_model) -> None:
    teacher = tiny_model(4, seed=1, hidden=(8,))
    for student, expected in ((tiny_model(6, seed=2, hidden=(8,)), "differ in name or shape"),
                              (tiny_model(4, seed=2, hidden=(8, 8)), "differ in name or shape"),
                              (tiny_model(4, seed=2, arch="fibinet"), "the teacher is 'mlp', the student 'fibinet'")):
        before = _state(student)
        reuse = reuse_teacher_network(teacher, student)
        assert not reuse.reused and reuse.copied == []
        assert expected in reuse.reason
        after = student.state_dict()
        assert all(torch.equal(before[name], after[name]) for name in before)
    # another width differs in the tower's first layer only: that layer is named, and the rest is not copied either
    assert reuse_teacher_network(teacher, tiny_model(6, seed=2, hidden=(8,))).mismatched == ["dnn.layers.0.weight"]


def _context(tiny_data, tiny_model, spec, reuse: bool) -> MethodContext:
    rows = tiny_data(1500)
    return MethodContext(
        splits={"train": rows.take(np.arange(1000)), "online": rows.take(np.arange(1000, 1500))},
        feature_spec=spec,
        teacher=tiny_model(4, seed=1, hidden=(8,)),
        student_config=parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]}),
        offline=OfflineSection(sampling={"ratio": 0.5, "temporal_blocks": 2}, reuse_teacher_network=reuse,
                               distillation={"frozen_epochs": 1, "joint_epochs": 0}),
        # Steps too small to move anything: the student is what the offline stage started from.
        optim=OptimSection(batch_size=64, dense_lr=1e-12, embedding_lr=1e-12),
        threads=1,
    )


def test_the_pipeline_starts_a_same_network_student_from_the_teacher_only_when_configured(
        tiny_data, tiny_model, tiny_spec) -> None:
    rows = tiny_data(400, seed=3)
    gaps = {}
    for reuse in (True, False):
        ctx = _context(tiny_data, tiny_model, tiny_spec, reuse)
        outcome = run_crossadapt(ctx, AblationSection(online_stage=False))
        gaps[reuse] = float((_logits(outcome.model, rows) - _logits(ctx.teacher, rows)).abs().max())
        assert ("network_reuse" in outcome.details) is reuse
    assert gaps[True] < 1e-5, gaps
    assert gaps[False] > 1e-2, gaps
    # the ablation without projection trains the paper's random student: nothing is reused there either
    ctx = _context(tiny_data, tiny_model, tiny_spec, True)
    assert "network_reuse" not in run_crossadapt(ctx, AblationSection(projection=False, online_stage=False)).details


def test_the_switch_config_reuses_by_default_and_can_keep_the_papers_student() -> None:
    data = {"data": {"synthetic": {"preset": "small", "rows": 2000}}}
    assert parse_switch_config(data).offline.reuse_teacher_network is True
    paper = parse_switch_config(data | {"offline": {"reuse_teacher_network": False}})
    assert paper.offline.reuse_teacher_network is False
