"""`crossadapt bench switch-platform --rounds N`: ratios are taken per round, then summarised."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.local.bench_switch import _summary, run_switch_bench


def test_a_modes_summary_is_the_median_of_its_rounds_with_each_ratios_range() -> None:
    rounds = [{"wall_s": 80.0, "stages_s": 50.0, "wall_ratio": 1.40, "stages_ratio": 1.30, "operations": {"a": 1}},
              {"wall_s": 70.0, "stages_s": 45.0, "wall_ratio": 1.10, "stages_ratio": 1.05, "operations": {"a": 2}},
              {"wall_s": 75.0, "stages_s": 48.0, "wall_ratio": 1.25, "stages_ratio": 1.20, "operations": {"a": 3}}]
    summary = _summary(rounds)
    assert summary["wall_s"] == 75.0 and summary["stages_s"] == 48.0
    assert summary["wall_ratio"] == 1.25 and summary["wall_ratio_range"] == [1.10, 1.40]
    assert summary["stages_ratio"] == 1.20 and summary["stages_ratio_range"] == [1.05, 1.30]
    assert summary["operations"] == {"a": 3}  # the last round's


def test_zero_rounds_is_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="rounds must be at least 1"):
        run_switch_bench(tmp_path / "missing.yaml", rounds=0, workdir=tmp_path)
