"""FLOPs counted by torch's FlopCounterMode equal what the math needs: no hidden waste in the kernels."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from crossadapt.models import build_model


def counted_flops(model, categorical, numerical) -> tuple[int, int]:
    """(forward FLOPs, forward + backward FLOPs) for one batch."""
    with FlopCounterMode(display=False) as forward_counter, torch.no_grad():
        model(categorical, numerical)
    with FlopCounterMode(display=False) as train_counter:
        model(categorical, numerical).sum().backward()
    return forward_counter.get_total_flops(), train_counter.get_total_flops()


def dense_flops(widths: list[int]) -> int:
    """2 * multiply-adds of a chain of Linear layers, per sample."""
    return sum(2 * a * b for a, b in zip(widths[:-1], widths[1:]))


def test_mlp_flops_are_exactly_the_dense_layers(spec_factory, inputs_factory):
    spec = spec_factory(26, 13, vocab=5)  # the paper's Criteo shape: 39 fields
    model = build_model({"architecture": "mlp", "embedding_dim": 8, "hidden_units": [64, 32, 4]}, spec)
    categorical, numerical = inputs_factory(spec, 32)
    forward, train = counted_flops(model, categorical, numerical)
    per_sample = dense_flops([39 * 8, 64, 32, 4, 1])
    assert per_sample == 44_296
    assert forward == 32 * per_sample
    assert train == 3 * forward  # backward = input gradients + weight gradients, nothing more


@pytest.mark.parametrize("bilinear_type", ["field_all", "field_each", "field_interaction"])
def test_fibinet_flops_match_the_formula(bilinear_type, spec_factory, inputs_factory):
    spec = spec_factory(26, 13, vocab=5)
    fields, width, pairs, inputs = 39, 16, 741, 2
    model = build_model(
        {"architecture": "fibinet", "embedding_dim": width, "hidden_units": [256, 128, 16],
         "bilinear_type": bilinear_type},
        spec,
    )
    batch = 8
    categorical, numerical = inputs_factory(spec, batch)
    forward, train = counted_flops(model, categorical, numerical)
    reduced = 13  # SENET squeeze width: 39 / 3
    senet = 2 * (fields * reduced + reduced * fields)
    mapped = {"field_all": fields, "field_each": fields - 1, "field_interaction": pairs}[bilinear_type]
    bilinear = 2 * inputs * mapped * width * width  # one D x D map per (mapped field or pair, input)
    dnn = dense_flops([inputs * pairs * width, 256, 128, 16, 1])
    assert forward == batch * (senet + bilinear + dnn)
    # Backward costs two forwards; field_interaction recomputes its per-pair maps once more
    # (a deliberate ~2% trade for not storing a second pair-sized activation).
    recompute = bilinear if bilinear_type == "field_interaction" else 0
    assert train == 3 * forward + batch * recompute
    if bilinear_type == "field_interaction":
        assert forward / batch == pytest.approx(12.971e6, rel=1e-4)
        assert recompute / (3 * (senet + bilinear + dnn)) < 0.02
