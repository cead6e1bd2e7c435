"""FeatureEmbedding.grow: a field's table gains rows (from a given tensor or the initialiser), nothing
else moves, and an optimizer keeps training the grown table."""

from __future__ import annotations

import pytest
import torch

from crossadapt.models import FeatureEmbedding, build_model
from crossadapt.models.layers.embedding import grow_optimizer_state


def test_grow_appends_rows_from_init_and_keeps_everything_else(spec_factory, inputs_factory):
    spec = spec_factory(3, 2)  # vocab sizes 7, 8, 9
    emb = FeatureEmbedding(spec, 4)
    categorical, numerical = inputs_factory(spec, 32)
    before = emb(categorical, numerical).detach()
    weight = emb.table.weight
    tables = {name: emb.get_table(name) for name in emb.table_names()}
    init = torch.arange(8.0).reshape(2, 4)
    growth = emb.grow("cat1", 2, init=init)
    assert emb.table.weight is weight  # an optimizer holding the parameter keeps it
    assert (growth.at, growth.rows, growth.old_vocab_size, growth.new_vocab_size) == (15, 2, 8, 10)
    assert emb.spec.categorical[1].vocab_size == 10 and emb.table.num_embeddings == 26
    assert emb.offsets.tolist() == [0, 7, 17] and emb.vocab_sizes.tolist() == [7, 10, 9]
    torch.testing.assert_close(emb(categorical, numerical), before)  # old ids read the same rows
    torch.testing.assert_close(emb.get_table("cat1")[:8], tables["cat1"])
    torch.testing.assert_close(emb.get_table("cat1")[8:], init)
    for name in ("cat0", "cat2", "__numerical__"):
        torch.testing.assert_close(emb.get_table(name), tables[name])
    new_ids = torch.tensor([[0, 8, 0], [1, 9, 2]])
    out = emb(new_ids, torch.zeros(2, 2))
    torch.testing.assert_close(out[:, 1], init)
    with pytest.raises(ValueError, match="out of range"):
        emb(torch.tensor([[0, 10, 0]]), torch.zeros(1, 2))


def test_rows_without_a_teacher_row_come_from_the_initialiser(spec_factory):
    emb = FeatureEmbedding(spec_factory(2, 0), 8, init_std=1e-3)
    torch.manual_seed(5)
    init = torch.full((300, 8), 7.0)
    use = torch.arange(300) % 3 == 0
    emb.grow("cat0", 300, init=init, use_init=use)
    rows = emb.get_table("cat0")[7:]
    assert torch.all(rows[use] == 7.0)
    drawn = rows[~use]
    assert drawn.abs().max() < 0.01 and 0.5e-3 < drawn.std() < 2e-3  # N(0, init_std^2)
    plain = FeatureEmbedding(spec_factory(2, 0), 8, init_std=1e-3)
    plain.grow("cat1", 5)
    assert plain.get_table("cat1").shape == (13, 8)


def test_training_continues_after_growth(spec_factory, inputs_factory):
    spec = spec_factory(3, 1)
    model = build_model({"architecture": "deepfm", "embedding_dim": 4, "hidden_units": [8]}, spec)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    categorical, numerical = inputs_factory(spec, 64)
    label = (torch.rand(64) < 0.5).float()

    def step(cat):
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(cat, numerical), label)
        loss.backward()
        optimizer.step()

    step(categorical)
    for module in model.embedding_modules():  # the main table and the first-order (width 1) weights
        growth = module.grow("cat2", 3)
        grow_optimizer_state(optimizer, module.table.weight, growth)
        state = optimizer.state[module.table.weight]
        assert state["exp_avg"].shape == module.table.weight.shape
        assert torch.all(state["exp_avg"][growth.at : growth.at + 3] == 0)
    grown = categorical.clone()
    grown[:, 2] = 9 + torch.arange(64) % 3  # only the new ids
    before = model.embedding.get_table("cat2")[9:].clone()
    step(grown)
    assert not torch.equal(model.embedding.get_table("cat2")[9:], before)  # the new rows learn


def test_grown_state_dict_loads_into_a_model_of_the_grown_spec(spec_factory):
    spec = spec_factory(2, 1)
    emb = FeatureEmbedding(spec, 4)
    emb.grow("cat0", 4, init=torch.ones(4, 4))
    fresh = FeatureEmbedding(emb.spec, 4)
    fresh.load_state_dict(emb.state_dict())
    torch.testing.assert_close(fresh.get_table("cat0"), emb.get_table("cat0"))
    with pytest.raises(RuntimeError, match="size mismatch"):
        FeatureEmbedding(spec, 4).load_state_dict(emb.state_dict())


def test_grow_rejects_bad_requests(spec_factory):
    emb = FeatureEmbedding(spec_factory(2, 1), 4)
    with pytest.raises(KeyError, match="nope"):
        emb.grow("nope", 1)
    with pytest.raises(KeyError):
        emb.grow("__numerical__", 1)
    with pytest.raises(ValueError, match=r"\[2, 4\]"):
        emb.grow("cat0", 2, init=torch.zeros(3, 4))
    with pytest.raises(ValueError, match="non-finite"):
        emb.grow("cat0", 1, init=torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match=">= 0"):
        emb.grow("cat0", -1)
    with pytest.raises(ValueError, match="use_init needs init"):
        emb.grow("cat0", 1, use_init=torch.tensor([True]))
    assert emb.spec.categorical[0].vocab_size == 7  # nothing changed
