"""Vectorised layers equal slow reference loops written straight from the papers' formulas."""

from __future__ import annotations

import pytest
import torch

from crossadapt.models.layers import (
    AttentionalPooling,
    BilinearInteraction,
    CompressedInteractionNet,
    CrossNet,
    CrossNetV2,
    FactorizationMachine,
    FieldSelfAttention,
    SqueezeExcitation,
)
from crossadapt.models.layers import pairs as pairs_module
from crossadapt.models.layers.pairs import PairBilinear, PairProduct, pair_indices, pair_row_indices


def reference_bilinear(fields: torch.Tensor, layer: BilinearInteraction) -> torch.Tensor:
    """p_ij = (v_i W) ⊙ v_j, one pair at a time; columns ordered (pair, input, d) like the layer."""
    batch, inputs, num_fields, _ = fields.shape
    columns = []
    pair = 0
    for i in range(num_fields):
        for j in range(i + 1, num_fields):
            for s in range(inputs):
                if layer.bilinear_type == "field_all":
                    weight = layer.weight[s]
                elif layer.bilinear_type == "field_each":
                    weight = layer.weight[i, s]
                else:
                    weight = layer.weight[pair, s]
                columns.append((fields[:, s, i] @ weight) * fields[:, s, j])
            pair += 1
    return torch.cat(columns, dim=1)


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
@pytest.mark.parametrize("inputs", [1, 2])
def test_bilinear_matches_reference_loop_forward_and_backward(bilinear_type, inputs):
    layer = BilinearInteraction(5, 3, bilinear_type, num_inputs=inputs).double()
    fields = torch.randn(7, inputs, 5, 3, dtype=torch.float64, requires_grad=True)
    out = layer(fields)
    expected = reference_bilinear(fields, layer)
    assert out.shape == (7, 10 * inputs * 3) == (7, layer.output_dim)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad((out * upstream).sum(), (fields, layer.weight))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (fields, layer.weight))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
def test_bilinear_in_several_blocks_matches_reference(bilinear_type, monkeypatch):
    """Large inputs run in blocks of whole pairs through reused scratch buffers; force one pair per block."""
    monkeypatch.setattr(pairs_module, "CHUNK_ELEMENTS", 1)
    assert pairs_module._row_blocks(18, 37, 6) == [(0, 6), (6, 12), (12, 18)]
    monkeypatch.setattr(pairs_module, "CHUNK_ELEMENTS", 4 * 37 * 6)
    assert pairs_module._row_blocks(30, 37, 6) == [(0, 24), (24, 30)]
    monkeypatch.setattr(pairs_module, "CHUNK_ELEMENTS", 1)
    layer = BilinearInteraction(4, 3, bilinear_type, num_inputs=2).double()
    fields = torch.randn(37, 2, 4, 3, dtype=torch.float64, requires_grad=True)
    out = layer(fields)
    expected = reference_bilinear(fields, layer)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad((out * upstream).sum(), (fields, layer.weight))
    expected_grads = torch.autograd.grad((expected * upstream).sum(), (fields, layer.weight))
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_bilinear_float32_matches_reference_and_feeds_linear_without_copy():
    layer = BilinearInteraction(39, 16, "field_interaction", num_inputs=2)
    fields = torch.randn(64, 2, 39, 16)
    out = layer(fields)
    torch.testing.assert_close(out, reference_bilinear(fields, layer), rtol=1e-4, atol=1e-5)
    assert out.stride() == (1, 64)  # a transposed view: the dense layer consumes it as a transposed GEMM
    linear = torch.nn.Linear(layer.output_dim, 3)
    torch.testing.assert_close(linear(out), linear(out.contiguous()), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("chunk_elements", [1 << 24, 1], ids=["one-block", "pair-per-block"])
def test_pair_functions_pass_gradcheck(chunk_elements, monkeypatch):
    monkeypatch.setattr(pairs_module, "CHUNK_ELEMENTS", chunk_elements)  # one block, or one pair per block
    left_rows, right_rows = pair_row_indices(4, 2 * 3)
    x = torch.randn(4 * 2 * 3, 20, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(6, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, w: PairBilinear.apply(a, w, left_rows, right_rows), (x, weight))
    other = torch.randn(4 * 2 * 3, 20, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: PairProduct.apply(a, b, left_rows, right_rows, 6), (x, other))
    # Same tensor on both sides (AFM's e_i ⊙ e_j): gradients of both uses add up.
    assert torch.autograd.gradcheck(lambda a: PairProduct.apply(a, a, left_rows, right_rows, 6), (x,))


def test_pair_bilinear_supports_retain_graph_reruns():
    layer = BilinearInteraction(3, 2, "field_interaction")
    fields = torch.randn(4, 1, 3, 2, requires_grad=True)
    out = layer(fields).square().sum()
    first, = torch.autograd.grad(out, fields, retain_graph=True)
    second, = torch.autograd.grad(out, fields)
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_pair_indices_order():
    left, right = pair_indices(4)
    assert left.tolist() == [0, 0, 0, 1, 1, 2] and right.tolist() == [1, 2, 3, 2, 3, 3]
    left_rows, right_rows = pair_row_indices(3, 2)
    assert left_rows.tolist() == [0, 1, 0, 1, 2, 3] and right_rows.tolist() == [2, 3, 4, 5, 4, 5]
    left_rows, right_rows = pair_row_indices(3, 2, element_major=True)
    assert left_rows.tolist() == [0, 0, 2, 1, 1, 3] and right_rows.tolist() == [2, 4, 4, 3, 5, 5]


def reference_cin(fields: torch.Tensor, cin: CompressedInteractionNet) -> torch.Tensor:
    """X^k_h = sum_{i,j} W^k_{h,i,j} (X^{k-1}_i ⊙ X^0_j) + b^k_h, element by element; then sum over D."""
    batch, num_fields, width = fields.shape
    x0 = fields
    previous = fields
    pooled = []
    for compression in cin.compressions:
        maps = compression.weight.shape[0]
        weight = compression.weight.view(maps, previous.shape[1], num_fields)
        current = torch.zeros(batch, maps, width, dtype=fields.dtype)
        for h in range(maps):
            for i in range(previous.shape[1]):
                for j in range(num_fields):
                    current[:, h] += weight[h, i, j] * previous[:, i] * x0[:, j]
            current[:, h] += compression.bias[h]
        pooled.append(current.sum(dim=-1))
        previous = current
    return torch.cat(pooled, dim=1)


def test_cin_matches_reference_loop():
    cin = CompressedInteractionNet(4, [3, 2]).double()
    fields = torch.randn(6, 4, 5, dtype=torch.float64, requires_grad=True)
    out = cin(fields)
    expected = reference_cin(fields, cin)
    assert out.shape == (6, 5)
    torch.testing.assert_close(out, expected, rtol=1e-12, atol=1e-12)
    grad, = torch.autograd.grad(out.sum(), fields)
    want, = torch.autograd.grad(expected.sum(), fields)
    torch.testing.assert_close(grad, want)


def test_senet_matches_formula():
    senet = SqueezeExcitation(6, reduction_ratio=3)
    first, _, second, _ = senet.excitation
    assert (first.in_features, first.out_features, second.out_features) == (6, 2, 6)
    assert first.bias is None and second.bias is None
    fields = torch.randn(5, 6, 4)
    squeezed = fields.mean(dim=-1)
    weights = torch.relu(torch.relu(squeezed @ first.weight.T) @ second.weight.T)
    torch.testing.assert_close(senet(fields), fields * weights.unsqueeze(-1))
    assert SqueezeExcitation(2, reduction_ratio=3).excitation[0].out_features == 1  # never below 1


def test_fm_equals_sum_of_pairwise_inner_products():
    fields = torch.randn(4, 5, 3, dtype=torch.float64)
    expected = sum((fields[:, i] * fields[:, j]).sum(-1) for i in range(5) for j in range(i + 1, 5))
    torch.testing.assert_close(FactorizationMachine()(fields), expected)


def test_cross_layers_match_formulas():
    x0 = torch.randn(3, 6, dtype=torch.float64)
    cross = CrossNet(6, 2).double()
    x = x0
    for projection, bias in zip(cross.projections, cross.biases):
        x = x0 * (x @ projection.weight.T) + bias + x
    torch.testing.assert_close(cross(x0), x)
    cross2 = CrossNetV2(6, 2, low_rank=2).double()
    x = x0
    for linear_map in cross2.maps:
        down, up = linear_map
        x = x0 * ((x @ down.weight.T) @ up.weight.T + up.bias) + x
    torch.testing.assert_close(cross2(x0), x)


def test_field_self_attention_matches_manual_heads():
    layer = FieldSelfAttention(4, heads=2, head_dim=3, use_residual=True).double()
    fields = torch.randn(2, 5, 4, dtype=torch.float64)
    qkv = fields @ layer.query_key_value.weight.T
    query, key, value = qkv.split(6, dim=-1)
    heads = []
    for h in range(2):
        cols = slice(3 * h, 3 * h + 3)
        scores = torch.softmax(query[..., cols] @ key[..., cols].transpose(1, 2), dim=-1)  # unscaled, as in AutoInt
        heads.append(scores @ value[..., cols])
    expected = torch.relu(torch.cat(heads, dim=-1) + fields @ layer.residual.weight.T)
    torch.testing.assert_close(layer(fields), expected)


def test_attentional_pooling_matches_formula():
    pooling = AttentionalPooling(3, 4).double()
    products = torch.randn(3, 6, 5, dtype=torch.float64)  # [D, P, B]
    by_pair = products.permute(2, 1, 0)  # [B, P, D]
    scores = torch.relu(by_pair @ pooling.attention.weight.T + pooling.attention.bias) @ pooling.context.weight.T
    weights = torch.softmax(scores.squeeze(-1), dim=1)
    torch.testing.assert_close(pooling(products), (weights.unsqueeze(-1) * by_pair).sum(1))


def test_afm_pooled_vector_matches_a_pair_loop(spec_factory, inputs_factory):
    from crossadapt.models import build_model

    spec = spec_factory(3, 2)
    config = {"architecture": "afm", "embedding_dim": 4, "attention_dim": 5, "hidden_units": []}
    model = build_model(config, spec).double()
    categorical, numerical = inputs_factory(spec, 6)
    fields = model.embedding(categorical, numerical.double())
    products = torch.stack([fields[:, i] * fields[:, j] for i in range(5) for j in range(i + 1, 5)], dim=1)  # [B, P, D]
    pooling = model.pooling
    scores = torch.relu(products @ pooling.attention.weight.T + pooling.attention.bias) @ pooling.context.weight.T
    pooled = (torch.softmax(scores, dim=1) * products).sum(1)
    _, hidden = model.forward_with_representation(categorical, numerical.double())
    torch.testing.assert_close(hidden, pooled)


@pytest.mark.parametrize("architecture", ["fibinet", "afm"])
def test_scratch_buffers_survive_inference_mode_then_training(architecture):
    """Scratch buffers are cached across calls; one first made under inference_mode must still be writable."""
    from crossadapt.models import CategoricalField, FeatureSpec, build_model

    pairs_module.clear_scratch_buffers()
    spec = FeatureSpec(categorical=tuple(CategoricalField(name=f"c{i}", vocab_size=5) for i in range(4)))
    model = build_model({"architecture": architecture, "embedding_dim": 4, "hidden_units": [8]}, spec)
    categorical = torch.randint(0, 5, (33, 4))
    numerical = torch.zeros(33, 0)
    with torch.inference_mode():
        predicted = model(categorical, numerical)
    logits = model(categorical, numerical)
    logits.sum().backward()
    torch.testing.assert_close(logits.detach(), predicted)
    assert model.embedding.table.weight.grad.abs().sum() > 0
    # A second, different-sized batch reuses (or grows) the cached buffers and stays exact.
    with torch.no_grad():
        torch.testing.assert_close(model(categorical[:7], numerical[:7]), predicted[:7])
