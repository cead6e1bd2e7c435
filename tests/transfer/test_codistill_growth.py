"""A vocabulary that grows during co-distillation: new stream ids get rows in both models, not <UNK>."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossadapt.data import SplitArrays
from crossadapt.metrics import auc
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.growth import table_sizes
from crossadapt.models.spec import CategoricalField, FeatureSpec
from crossadapt.transfer.online.codistillation import OnlineCoDistillConfig, build_codistiller
from crossadapt.transfer.projection import table_projection

KNOWN_USERS, ALL_USERS = 30, 43  # ids 30..42 (13 of 43, 30% of the stream's users) are newer than the tables


def _stream(n: int, seed: int = 3) -> SplitArrays:
    """Time-ordered rows whose click depends strongly on the user; 30% of the users are new ids."""
    rng = np.random.default_rng(seed)
    effect = rng.normal(0.0, 1.6, ALL_USERS)
    users = rng.integers(0, ALL_USERS, n)
    items = rng.integers(0, 12, n)
    price = rng.standard_normal((n, 1)).astype(np.float32)
    z = effect[users] + 0.4 * price[:, 0] - 0.5
    label = (rng.random(n) < 1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    return SplitArrays(categorical=np.stack([users, items], 1).astype(np.int64), numerical=price, label=label,
                       timestamp=np.arange(n, dtype=np.int64))


def _model(users: int, dim: int, seed: int, arch: str = "mlp"):
    torch.manual_seed(seed)
    spec = FeatureSpec(categorical=(CategoricalField(name="user", vocab_size=users),
                                    CategoricalField(name="item", vocab_size=12)), numerical=("price",))
    config = parse_model_config({"architecture": arch, "embedding_dim": dim, "hidden_units": [8],
                                 "embedding_init_std": 0.05})
    return build_model(config, spec)


def _new_id_auc(grow: bool) -> tuple[float, object]:
    torch.manual_seed(0)
    config = OnlineCoDistillConfig(batch_size=100, teacher_update_interval=2, window_batches=5, num_threads=1,
                                   grow_vocabulary=grow, seed=0)
    distiller = build_codistiller(_model(KNOWN_USERS, 4, 1), _model(KNOWN_USERS, 6, 2), config)
    stream = _stream(6000)
    distiller.consume(stream)
    distiller.finish()
    labels, student, _ = distiller.recorder.logits()
    new_rows = stream.categorical[:, 0] >= KNOWN_USERS
    return auc(labels[new_rows], student[new_rows]), distiller


def test_growth_beats_unk_on_rows_with_new_ids():
    grown_auc, grown = _new_id_auc(grow=True)
    unk_auc, unk = _new_id_auc(grow=False)
    assert table_sizes(grown.trainer.model) == [ALL_USERS, 12]
    assert table_sizes(grown.teacher.model) == [ALL_USERS, 12]
    assert table_sizes(unk.trainer.model) == [KNOWN_USERS, 12]
    # <UNK> cannot tell the 13 new users apart (their AUC is the item/price signal only, ~0.5).
    assert grown_auc > unk_auc + 0.08, (grown_auc, unk_auc)
    assert grown_auc > 0.65


def test_new_student_rows_start_from_projected_teacher_rows_and_optimizer_state_follows():
    teacher, student = _model(40, 8, 1), _model(KNOWN_USERS, 4, 2)  # the teacher knows ids 30..39
    config = OnlineCoDistillConfig(batch_size=50, num_threads=1, grow_vocabulary=True, projection_seed=5)
    distiller = build_codistiller(teacher, student, config)
    known = _stream(50)
    known.categorical[:, 0] %= KNOWN_USERS
    distiller.train_batch(known.to_batch())  # Adam state exists before the growth
    old_student = student.embedding.get_table("user")
    old_teacher = teacher.embedding.get_table("user")
    added = distiller.grow_to([45, 12])
    assert added == {"user": 15}
    table = student.embedding.get_table("user")
    assert torch.equal(table[:KNOWN_USERS], old_student)
    expected = table_projection(old_teacher.numpy(), 4, 5).apply(old_teacher.numpy()[KNOWN_USERS:40])
    np.testing.assert_allclose(table[KNOWN_USERS:40].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(table[40:], torch.zeros(5, 4))  # ids the teacher lacks: the initialiser
    grown_teacher = teacher.embedding.get_table("user")
    assert grown_teacher.shape == (45, 8) and torch.equal(grown_teacher[:40], old_teacher)
    for optimizer in distiller.trainer.optimizer.optimizers:
        for parameter, state in optimizer.state.items():
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.dim() >= 1:
                    assert value.shape == parameter.shape
    distiller.train_batch(_stream(50, seed=9).to_batch())  # grown ids train without an error


def test_without_growth_new_ids_read_as_unk():
    distiller = build_codistiller(_model(KNOWN_USERS, 4, 1), _model(KNOWN_USERS, 6, 2),
                                  OnlineCoDistillConfig(batch_size=100, num_threads=1))
    read = distiller.fit_vocabulary(_stream(500))
    users = _stream(500).categorical[:, 0]
    assert np.array_equal(read.categorical[:, 0], np.where(users < KNOWN_USERS, users, 0))
    with pytest.raises(ValueError):
        OnlineCoDistillConfig(grow_vocabulary="sometimes")
