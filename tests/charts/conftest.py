"""Chart test fixtures: the helm binary and one render per example values file (rendered once per run)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from chart_harness import VALUES_FILES, Render, helm_binary, render  # noqa: E402


def _cache_kubernetes_schemas() -> None:
    """kubernetes-validate re-reads its 1 MB definitions file for every resource; read each file once.

    The schemas are packaged, read-only data and `validate` never mutates them, so caching the
    reader changes nothing but the time (about 60% of it).
    """
    from functools import lru_cache

    import kubernetes_validate.utils as utils

    if not hasattr(utils.schema_contents, "cache_info"):
        utils.schema_contents = lru_cache(maxsize=None)(utils.schema_contents)


_cache_kubernetes_schemas()


@pytest.fixture(scope="session")
def helm_path() -> Path:
    return helm_binary()


@pytest.fixture(scope="session")
def renders(helm_path: Path) -> dict[str, Render]:  # noqa: ARG001 - extracts helm first
    """`helm template` with each example values file, CRDs included."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=len(VALUES_FILES)) as pool:  # helm runs as subprocesses
        done = {name: pool.submit(render, files, include_crds=True) for name, files in VALUES_FILES.items()}
    return {name: future.result() for name, future in done.items()}


@pytest.fixture(scope="session")
def default_render(renders: dict[str, Render]) -> Render:
    return renders["default"]
