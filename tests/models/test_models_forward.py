"""Every model: shapes, finiteness, representation, parameter groups, freezing, state_dict round trip."""

from __future__ import annotations

import pytest
import torch

from crossadapt.models import FeatureEmbedding, build_model, list_models

SMALL = {
    "mlp": {},
    "widedeep": {},
    "deepfm": {},
    "dcn": {"num_cross_layers": 2},
    "dcnv2": {"num_cross_layers": 2, "low_rank": 4},
    "autoint": {"attention_layers": 2, "attention_heads": 2, "attention_dim": 4, "hidden_units": [8]},
    "afm": {"attention_dim": 4},
    "fibinet": {"bilinear_type": "field_each"},
    "xdeepfm": {"cin_layer_units": [5, 3]},
}


def small_config(architecture: str, **overrides) -> dict:
    config = {"architecture": architecture, "embedding_dim": 4, "hidden_units": [16, 8]}
    config.update(SMALL[architecture])
    config.update(overrides)
    return config


def expected_representation_width(architecture: str, num_fields: int, config: dict) -> int:
    width, hidden = config["embedding_dim"], config["hidden_units"]
    flat = num_fields * width
    last = hidden[-1] if hidden else None
    return {
        "mlp": last or flat,
        "widedeep": last or flat,
        "deepfm": last or flat,
        "dcn": flat + (last or 0),
        "dcnv2": flat + (last or 0),
        "autoint": num_fields * config.get("attention_heads", 2) * config.get("attention_dim", 32) + (last or 0),
        "afm": last or width,
        "fibinet": last or num_fields * (num_fields - 1) * width,
        "xdeepfm": sum(config.get("cin_layer_units", [16, 16, 16])) + (last or 0),
    }[architecture]


@pytest.mark.parametrize("architecture", list_models())
@pytest.mark.parametrize("num_categorical, num_numerical", [(4, 3), (6, 0), (1, 1), (0, 3)])
def test_forward_shapes_and_finite(architecture, num_categorical, num_numerical, spec_factory, inputs_factory):
    spec = spec_factory(num_categorical, num_numerical)
    config = small_config(architecture)
    model = build_model(config, spec)
    categorical, numerical = inputs_factory(spec, 9)
    logits, hidden = model.forward_with_representation(categorical, numerical)
    assert logits.shape == (9,) and logits.dtype == torch.float32
    assert hidden.shape == (9, expected_representation_width(architecture, spec.num_fields, config))
    assert torch.isfinite(logits).all() and torch.isfinite(hidden).all()
    assert torch.equal(model(categorical, numerical), logits)
    logits.sum().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("architecture", list_models())
def test_options_dropout_batchnorm_and_no_hidden_layers(architecture, spec_factory, inputs_factory):
    spec = spec_factory(3, 2)
    categorical, numerical = inputs_factory(spec, 8)
    model = build_model(small_config(architecture, dropout=0.3, batch_norm=True), spec)
    modules = {type(m).__name__ for m in model.modules()}
    assert {"Dropout", "BatchNorm1d"} <= modules
    model.train()
    assert model(categorical, numerical).shape == (8,)
    model.eval()
    assert torch.equal(model(categorical, numerical), model(categorical, numerical))  # eval is deterministic
    bare = build_model(small_config(architecture, hidden_units=[]), spec)
    logits, hidden = bare.forward_with_representation(categorical, numerical)
    assert logits.shape == (8,)
    expected = expected_representation_width(architecture, spec.num_fields, small_config(architecture, hidden_units=[]))
    assert hidden.shape[1] == expected


@pytest.mark.parametrize("architecture", list_models())
def test_parameter_groups_partition_the_model(architecture, spec_factory):
    model = build_model(small_config(architecture), spec_factory(3, 2))
    embedding = model.embedding_parameters()
    interaction = model.interaction_parameters()
    ids = [id(p) for p in embedding + interaction]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert any(p is model.embedding.table.weight for p in embedding)
    embedding_ids = {id(p) for p in embedding}
    for module in model.modules():
        if isinstance(module, FeatureEmbedding):  # main and first-order tables alike
            assert all(id(p) in embedding_ids for p in module.parameters())
    first_order = architecture in {"widedeep", "deepfm", "afm", "fibinet", "xdeepfm"}
    assert len(model.embedding_modules()) == (2 if first_order else 1)
    assert interaction  # every architecture has dense parameters


@pytest.mark.parametrize("architecture", list_models())
def test_freeze_embeddings_stops_only_embedding_gradients(architecture, spec_factory, inputs_factory):
    spec = spec_factory(3, 2)
    model = build_model(small_config(architecture), spec)
    categorical, numerical = inputs_factory(spec, 16)
    model.freeze_embeddings(True)
    assert model.embeddings_frozen
    model(categorical, numerical).square().sum().backward()
    assert all(p.grad is None for p in model.embedding_parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.interaction_parameters())
    model.zero_grad(set_to_none=True)
    model.freeze_embeddings(False)
    assert not model.embeddings_frozen
    model(categorical, numerical).square().sum().backward()
    assert model.embedding.table.weight.grad is not None and model.embedding.table.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("architecture", list_models())
def test_state_dict_round_trip_and_seeded_init(architecture, spec_factory, inputs_factory):
    spec = spec_factory(3, 2)
    config = small_config(architecture, batch_norm=True)
    torch.manual_seed(0)
    first = build_model(config, spec)
    torch.manual_seed(0)
    again = build_model(config, spec)
    for (name, a), (_, b) in zip(first.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name
    torch.manual_seed(1)
    other = build_model(config, spec)
    categorical, numerical = inputs_factory(spec, 12)
    first.train()
    first(categorical, numerical)  # update BatchNorm running statistics
    first.eval()
    other.eval()
    assert not torch.allclose(first(categorical, numerical), other(categorical, numerical))
    state = first.state_dict()
    assert not any(key.endswith(("offsets", "vocab_sizes", "_rows")) for key in state)  # derived from the spec
    other.load_state_dict(state)
    torch.testing.assert_close(other(categorical, numerical), first(categorical, numerical), rtol=0, atol=0)


def test_fibinet_rejects_a_single_field(spec_factory):
    with pytest.raises(ValueError, match="at least 2 fields"):
        build_model({"architecture": "fibinet"}, spec_factory(1, 0))


def test_afm_with_a_single_field_falls_back_to_first_order(spec_factory, inputs_factory):
    spec = spec_factory(1, 0)
    model = build_model(small_config("afm"), spec)
    categorical, numerical = inputs_factory(spec, 5)
    logits, hidden = model.forward_with_representation(categorical, numerical)
    assert logits.shape == (5,) and torch.isfinite(logits).all()


def test_paper_models_build_with_the_documented_sizes(spec_factory):
    spec = spec_factory(26, 13, vocab=3)
    teacher = build_model({"architecture": "mlp"}, spec)
    assert [m.out_features for m in teacher.dnn.layers if isinstance(m, torch.nn.Linear)] == [64, 32, 4]
    assert teacher.dnn.input_dim == 39 * 8
    student = build_model({"architecture": "fibinet"}, spec)
    assert student.bilinear.num_pairs == 741 and student.bilinear.output_dim == 2 * 741 * 16
    assert [m.out_features for m in student.dnn.layers if isinstance(m, torch.nn.Linear)] == [256, 128, 16]
    assert student.bilinear.weight.shape == (741, 2, 16, 16)  # field_interaction: one W per pair and input
