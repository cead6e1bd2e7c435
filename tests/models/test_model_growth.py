"""grow_model: every fused table of a model grows (first-order ones too), and a grown model checkpoints and
projects like any other."""

from __future__ import annotations

import torch

from crossadapt.checkpoint import load_checkpoint, save_checkpoint
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.growth import grow_model, table_sizes
from crossadapt.models.spec import CategoricalField, FeatureSpec
from crossadapt.training import TrainOptimizer
from crossadapt.transfer.projection import project_model_embeddings

SPEC = FeatureSpec(categorical=(CategoricalField(name="a", vocab_size=5), CategoricalField(name="b", vocab_size=3)),
                   numerical=("x",))


def _model(arch: str, dim: int, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(parse_model_config({"architecture": arch, "embedding_dim": dim, "hidden_units": [4]}), SPEC)


def test_every_table_grows_and_the_optimizer_follows(tmp_path):
    model = _model("deepfm", 4)
    optimizer = TrainOptimizer(model, embedding_lr=0.1, dense_lr=1e-3)
    categorical, numerical = torch.tensor([[4, 2]]), torch.tensor([[0.5]])
    model(categorical, numerical).sum().backward()
    optimizer.step()
    assert len(model.embedding_modules()) == 2  # the field embedding and the first-order table
    before = [module.get_table("a") for module in model.embedding_modules()]
    assert grow_model(model, [8, 3], optimizer.optimizers) == {"a": 3}
    assert table_sizes(model) == [8, 3] and model.spec.categorical[0].vocab_size == 8
    for module, old in zip(model.embedding_modules(), before):
        assert torch.equal(module.get_table("a")[:5], old) and module.get_table("a").shape[0] == 8
    optimizer.zero_grad()
    model(torch.tensor([[7, 2]]), numerical).sum().backward()  # a new id trains
    optimizer.step()
    save_checkpoint(tmp_path / "ck", model, feature_spec=model.spec, vocab_hash="v2")
    loaded = load_checkpoint(tmp_path / "ck").model
    assert table_sizes(loaded) == [8, 3]
    torch.testing.assert_close(loaded(torch.tensor([[7, 2]]), numerical), model.eval()(torch.tensor([[7, 2]]), numerical))


def test_a_grown_teacher_projects_into_a_student_of_the_grown_version():
    teacher = _model("mlp", 6)
    grow_model(teacher, [9, 4])
    student = build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 3, "hidden_units": [4]}),
                          teacher.spec)
    reports = project_model_embeddings(teacher, student)
    assert reports["a"].rows == 9 and student.embedding.get_table("a").shape == (9, 3)
