"""Every architecture learns a pure two-field interaction it cannot get from first-order terms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from crossadapt.models import CategoricalField, FeatureSpec, build_model, list_models

VOCAB = 6
SPEC = FeatureSpec(
    categorical=tuple(CategoricalField(name=f"c{i}", vocab_size=VOCAB) for i in range(4)),
    numerical=("noise0", "noise1"),
)
SETTINGS = {
    "autoint": {"attention_layers": 1, "attention_dim": 8},
    "afm": {"attention_dim": 8},
    "dcn": {"num_cross_layers": 2},
    "dcnv2": {"num_cross_layers": 2},
    "xdeepfm": {"cin_layer_units": [8, 8]},
}


def make_data(rows: int, generator: torch.Generator):
    """Label = sign of a fixed random table over (c0, c1) with balanced rows and columns: each id alone
    says nothing about the label, only the pair does. c2, c3 and the numbers are noise."""
    categorical = torch.randint(0, VOCAB, (rows, 4), generator=generator)
    numerical = torch.randn(rows, 2, generator=generator)
    # Every row and every column of the table has as many +1 as -1.
    table = torch.tensor([[1, -1, 1, -1, 1, -1], [-1, 1, -1, 1, -1, 1], [1, 1, -1, -1, 1, -1],
                          [-1, -1, 1, 1, -1, 1], [1, -1, -1, 1, -1, 1], [-1, 1, 1, -1, 1, -1]])
    label = (table[categorical[:, 0], categorical[:, 1]] > 0).float()
    return categorical, numerical, label


def test_the_signal_is_invisible_to_first_order_terms():
    categorical, _, label = make_data(20000, torch.Generator().manual_seed(0))
    for field in range(4):
        rates = torch.stack([label[categorical[:, field] == v].mean() for v in range(VOCAB)])
        assert (rates - 0.5).abs().max() < 0.05


@pytest.mark.parametrize("architecture", list_models())
def test_model_learns_the_interaction(architecture):
    generator = torch.Generator().manual_seed(42)
    train_cat, train_num, train_y = make_data(4096, generator)
    test_cat, test_num, test_y = make_data(2048, generator)
    torch.manual_seed(0)
    config = {"architecture": architecture, "embedding_dim": 8, "hidden_units": [32, 16]}
    config.update(SETTINGS.get(architecture, {}))
    model = build_model(config, SPEC)
    optimizer = torch.optim.Adam(
        [{"params": model.embedding_parameters(), "lr": 0.05}, {"params": model.interaction_parameters(), "lr": 0.01}]
    )
    losses = []
    for step in range(300):
        rows = torch.randint(0, len(train_y), (256,), generator=generator)
        loss = F.binary_cross_entropy_with_logits(model(train_cat[rows], train_num[rows]), train_y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        scores = model(test_cat, test_num)
    start, end = sum(losses[:10]) / 10, sum(losses[-20:]) / 20
    auc = roc_auc_score(test_y.numpy(), scores.numpy())
    assert end < 0.5 * start, (start, end)
    assert auc > 0.8, auc
