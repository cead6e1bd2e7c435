"""Fixtures for the data-layer tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_sources import criteo_line, write_lines


@pytest.fixture
def criteo_file(tmp_path: Path) -> Path:
    lines = [criteo_line(i % 2, [i, "", 3, 8, 0.5, -1, 1, 2, 3, 4, 5, 6, 7], [f"v{i % 3}", ""] + ["x"] * 24) for i in range(10)]
    return write_lines(tmp_path / "train.txt", lines)
