"""FeatureEmbedding: one fused lookup, per-field addressing, validation, sparse gradients, init."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from crossadapt.models import NUMERICAL_TABLE, FeatureEmbedding, build_model


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.calls: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_forward_is_one_lookup_with_offsets(spec_factory, inputs_factory):
    spec = spec_factory(5, 2)
    emb = FeatureEmbedding(spec, 4)
    categorical, numerical = inputs_factory(spec, 11)
    with CountOps() as ops:
        out = emb(categorical, numerical)
    assert ops.calls.count("aten.embedding") == 1
    assert out.shape == (11, 7, 4)
    # Each field k reads its own block of the fused table: rows offsets[k] + id.
    starts = torch.tensor([0, 7, 15, 24, 34])
    assert torch.equal(emb.offsets, starts)
    assert emb.table.num_embeddings == sum(f.vocab_size for f in spec.categorical) == 45
    expected = emb.table.weight[categorical + starts]
    assert torch.equal(out[:, :5], expected)
    # Numerical field n is value * vector n.
    assert torch.allclose(out[:, 5:], numerical.unsqueeze(-1) * emb.numerical_vectors)


def test_set_table_changes_only_that_fields_outputs(spec_factory, inputs_factory):
    spec = spec_factory(4, 2)
    emb = FeatureEmbedding(spec, 3)
    categorical, numerical = inputs_factory(spec, 50)
    before = emb(categorical, numerical).detach()
    for k, name in enumerate(emb.table_names()[:4]):
        new = torch.randn(spec.categorical[k].vocab_size, 3)
        emb.set_table(name, new)
        after = emb(categorical, numerical).detach()
        assert torch.equal(after[:, k], new[categorical[:, k]])
        others = [f for f in range(6) if f != k]
        assert torch.equal(after[:, others], before[:, others])
        assert torch.equal(emb.get_table(name), new)
        before = after
    vectors = torch.randn(2, 3)
    emb.set_table(NUMERICAL_TABLE, vectors)
    after = emb(categorical, numerical).detach()
    assert torch.equal(after[:, :4], before[:, :4])
    assert torch.allclose(after[:, 4:], numerical.unsqueeze(-1) * vectors)


def test_table_names_and_get_table_is_a_copy(spec_factory):
    spec = spec_factory(2, 3)
    emb = FeatureEmbedding(spec, 5)
    assert emb.table_names() == ["cat0", "cat1", NUMERICAL_TABLE]
    table = emb.get_table("cat1")
    assert table.shape == (8, 5) and not table.requires_grad
    table.zero_()
    assert emb.get_table("cat1").abs().sum() > 0
    assert FeatureEmbedding(spec_factory(2, 0), 5).table_names() == ["cat0", "cat1"]
    assert emb.get_table(NUMERICAL_TABLE).shape == (3, 5)


def test_set_table_validation_errors_are_clear(spec_factory):
    emb = FeatureEmbedding(spec_factory(2, 0), 4)
    before = emb.table.weight.detach().clone()
    with pytest.raises(KeyError, match="nope.*cat0"):
        emb.get_table("nope")
    with pytest.raises(KeyError, match="__numerical__"):
        emb.set_table(NUMERICAL_TABLE, torch.zeros(1, 4))  # no numerical fields in this spec
    with pytest.raises(ValueError, match=r"cat0.*\(7, 4\).*\(7, 3\)"):
        emb.set_table("cat0", torch.zeros(7, 3))
    bad = torch.zeros(7, 4)
    bad[5, 2] = float("nan")
    with pytest.raises(ValueError, match="cat0.*row 5.*non-finite"):
        emb.set_table("cat0", bad)
    bad[5, 2] = float("inf")
    with pytest.raises(ValueError, match="row 5"):
        emb.set_table("cat0", bad)
    with pytest.raises(TypeError, match="floating"):
        emb.set_table("cat0", torch.zeros(7, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor"):
        emb.set_table("cat0", [[0.0] * 4] * 7)
    assert torch.equal(emb.table.weight, before)  # failed calls changed nothing
    emb.set_table("cat1", torch.ones(8, 4, dtype=torch.float64))  # dtype converted
    assert emb.table.weight.dtype == torch.float32 and torch.equal(emb.get_table("cat1"), torch.ones(8, 4))


def test_bad_inputs_are_rejected_naming_the_field(spec_factory):
    spec = spec_factory(3, 1)
    emb = FeatureEmbedding(spec, 2)
    categorical = torch.tensor([[0, 1, 2], [1, 8, 0]])
    numerical = torch.zeros(2, 1)
    with pytest.raises(ValueError, match=r"id 8 at row 1.*'cat1'.*column 1.*vocab_size 8"):
        emb(categorical, numerical)
    with pytest.raises(ValueError, match="id -1"):
        emb(torch.tensor([[-1, 0, 0]]), torch.zeros(1, 1))
    with pytest.raises(ValueError, match=r"categorical must be \[B, 3\]"):
        emb(torch.zeros(2, 2, dtype=torch.long), numerical)
    with pytest.raises(ValueError, match=r"numerical must be \[B, 1\]"):
        emb(torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="rows"):
        emb(torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 1))


def test_initialisation_is_seeded_and_small(spec_factory):
    spec = spec_factory(3, 2, vocab=400)
    torch.manual_seed(7)
    a = FeatureEmbedding(spec, 16)
    torch.manual_seed(7)
    b = FeatureEmbedding(spec, 16, init_std=1e-4)
    assert torch.equal(a.table.weight, b.table.weight) and torch.equal(a.numerical_vectors, b.numerical_vectors)
    assert a.table.weight.std().item() == pytest.approx(1e-4, rel=0.05)
    c = FeatureEmbedding(spec, 16, init_std=1e-2)
    assert c.table.weight.std().item() == pytest.approx(1e-2, rel=0.05)
    with pytest.raises(ValueError, match="init_std"):
        FeatureEmbedding(spec, 16, init_std=0.0)


@pytest.mark.parametrize("architecture", ["mlp", "deepfm", "fibinet"])
def test_sparse_gradients_train_with_sparse_adam(architecture, spec_factory, inputs_factory):
    spec = spec_factory(3, 2, vocab=50)
    model = build_model({"architecture": architecture, "embedding_dim": 4, "hidden_units": [8]}, spec, sparse=True)
    sparse_params = model.sparse_parameters()
    assert len(sparse_params) == (2 if architecture != "mlp" else 1)  # main table (+ first-order table)
    sparse_ids = {id(p) for p in sparse_params}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    sparse_opt = torch.optim.SparseAdam(sparse_params, lr=0.1)
    dense_opt = torch.optim.Adam(dense, lr=1e-3)
    categorical, numerical = inputs_factory(spec, 16)
    categorical[:, 0] = 3  # field 0 only ever uses id 3
    table_before = model.embedding.get_table("cat0")
    others_before = model.embedding.get_table("cat1")
    loss = model(categorical, numerical).square().mean()
    loss.backward()
    grad = model.embedding.table.weight.grad
    assert grad.is_sparse
    assert model.embedding.numerical_vectors.grad is not None and not model.embedding.numerical_vectors.grad.is_sparse
    sparse_opt.step()
    dense_opt.step()
    table_after = model.embedding.get_table("cat0")
    changed_rows = (table_after != table_before).any(dim=1).nonzero().flatten().tolist()
    assert changed_rows == [3]
    used = set(categorical[:, 1].tolist())
    changed_other = set((model.embedding.get_table("cat1") != others_before).any(dim=1).nonzero().flatten().tolist())
    assert changed_other == used


def test_sparse_and_dense_modes_give_the_same_gradient(spec_factory, inputs_factory):
    spec = spec_factory(3, 1, vocab=20)
    torch.manual_seed(3)
    dense = build_model({"architecture": "widedeep", "embedding_dim": 4, "hidden_units": [8]}, spec)
    torch.manual_seed(3)
    sparse = build_model({"architecture": "widedeep", "embedding_dim": 4, "hidden_units": [8]}, spec, sparse=True)
    categorical, numerical = inputs_factory(spec, 32)
    dense(categorical, numerical).sum().backward()
    sparse(categorical, numerical).sum().backward()
    assert not dense.embedding.table.weight.grad.is_sparse
    torch.testing.assert_close(sparse.embedding.table.weight.grad.to_dense(), dense.embedding.table.weight.grad)
    sparse.set_sparse_gradients(False)
    assert sparse.sparse_parameters() == []
    sparse.zero_grad()
    sparse(categorical, numerical).sum().backward()
    assert not sparse.embedding.table.weight.grad.is_sparse
