"""The `long_history` synthetic preset: values frequent in hist, (almost) absent from D_train, back later."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from crossadapt.data.synthetic import simulate
from crossadapt.data.synthetic_config import (
    LONG_HISTORY_SPLIT,
    preset_split,
    split_periods,
    synthetic_preset,
)

ROWS = 48_000


def _split_bounds(rows: int, split: tuple[float, ...] = LONG_HISTORY_SPLIT) -> list[int]:
    return [int(round(b)) for b in np.cumsum([0.0, *split]) / sum(split) * rows]


def test_early_values_fill_hist_skip_d_train_and_return_in_online_and_test() -> None:
    config = synthetic_preset("long_history", rows=ROWS)
    sim = simulate(config)
    bounds = _split_bounds(ROWS)
    fields = [f for f, world in enumerate(sim.worlds) if world.early.size]
    assert len(fields) == 3  # the fields of >= 1000 values
    for f in fields:
        world, values = sim.worlds[f], sim.categorical[config.categorical_names[f]]
        share = [np.isin(values[a:b], world.early).mean() for a, b in pairwise(bounds)]
        hist, train, online, test = share
        assert hist > 0.10 and online > 0.10 and test > 0.10, share
        assert train < 0.01, share  # only the Zipf law's own rare draws of those tail values
        # They keep the effects they had in hist (only head values drift at the shift points).
        assert all(np.array_equal(w[world.early], world.weights[0][world.early]) for w in world.weights)


def test_other_presets_keep_their_early_values_rare_after_hist() -> None:
    config = synthetic_preset("small", rows=ROWS)
    assert config.early_return is None and preset_split("small") == (4.0, 4.0, 1.0, 1.0)
    sim = simulate(config)
    world = next(w for w in sim.worlds if w.early.size)
    field = next(f for f, w in enumerate(sim.worlds) if w.early.size)
    late = sim.categorical[config.categorical_names[field]][int(0.9 * ROWS):]
    assert np.isin(late, world.early).mean() < 0.05  # early_residual: rare, not back


def test_early_return_must_follow_the_early_period() -> None:
    with pytest.raises(ValidationError, match="early_return"):
        synthetic_preset("long_history", early_return=0.5)


def test_prepared_long_history_has_its_split_and_knows_the_early_values(tmp_path: Path) -> None:
    from crossadapt.transfer.switch import prepare_synthetic

    dataset = prepare_synthetic("long_history", ROWS, 0, tmp_path)
    sizes = [len(dataset.split(name)) for name in ("hist", "train", "online", "test")]
    assert sizes == list(np.diff(_split_bounds(ROWS)))
    # The vocabulary is fitted on hist ∪ train, so the early values have ids of their own in the test split.
    config = synthetic_preset("long_history", rows=ROWS)
    sim = simulate(config)
    field = next(f for f, w in enumerate(sim.worlds) if w.early.size)
    name = config.categorical_names[field]
    raw_test = sim.categorical[name][-sizes[3]:]
    column = [f.name for f in dataset.feature_spec.categorical].index(name)
    test_ids = dataset.split("test").categorical[:, column]
    returned = np.isin(raw_test, sim.worlds[field].early)
    assert returned.mean() > 0.10 and (test_ids[returned] > 0).all()  # none is <UNK> (id 0)


def test_own_split_keeps_the_preset_draw_for_draw() -> None:
    # The preset's periods are its split's boundaries: stating its own split changes nothing.
    assert synthetic_preset("long_history", **split_periods("long_history", LONG_HISTORY_SPLIT)) \
        == synthetic_preset("long_history")


def test_another_split_moves_the_periods_with_it(tmp_path: Path) -> None:
    from crossadapt.transfer.switch import prepare_synthetic

    split = (12.0, 4.0, 1.0, 1.0)  # the paper's D_train : D_online of 4:1
    dataset = prepare_synthetic("long_history", ROWS, 0, tmp_path, split=split)
    assert dataset.path.name.endswith("-split12-4-1-1")
    sizes = [len(dataset.split(name)) for name in ("hist", "train", "online", "test")]
    assert sizes == list(np.diff(_split_bounds(ROWS, split)))
    config = synthetic_preset("long_history", rows=ROWS, **split_periods("long_history", split))
    sim = simulate(config)
    bounds = _split_bounds(ROWS, split)
    for f in [f for f, world in enumerate(sim.worlds) if world.early.size]:
        values = sim.categorical[config.categorical_names[f]]
        hist, train, online, test = (np.isin(values[a:b], sim.worlds[f].early).mean() for a, b in pairwise(bounds))
        assert hist > 0.10 and online > 0.10 and test > 0.10 and train < 0.01


@pytest.mark.parametrize("name, split", [("small", (4.0, 4.0, 1.0, 1.0)), ("long_history", (12.0, 0.0, 1.0, 1.0))])
def test_split_periods_refuses_what_it_cannot_place(name: str, split: tuple[float, ...]) -> None:
    with pytest.raises(ValueError, match="split"):
        split_periods(name, split)
