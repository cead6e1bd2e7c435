"""Test-only slowdowns injected into the platform's subprocesses (never part of production code).

The platform tests start workers with this folder on PYTHONPATH, so Python imports this module at
start-up. With `CROSSADAPT_TEST_CHUNK_PAUSE_S` set, every progress report of a task (one per chunk,
`services.common.task_steps.OperationSteps.reporter`) also sleeps that long: a shard task then lasts
long enough to be killed mid-way.
"""

from __future__ import annotations

import importlib.abc
import os
import sys
import time

PAUSE_S = float(os.environ.get("CROSSADAPT_TEST_CHUNK_PAUSE_S", "0") or 0)
TARGET = "services.common.task_steps"


def _slow_reporter(module) -> None:  # noqa: ANN001
    original = module.OperationSteps.reporter

    def reporter(self, task, operation_id, unit):  # noqa: ANN001, ANN202
        report = original(self, task, operation_id, unit)

        def slow(fraction: float) -> None:
            report(fraction)
            time.sleep(PAUSE_S)

        return slow

    module.OperationSteps.reporter = reporter


class _PatchAfterImport(importlib.abc.MetaPathFinder):
    """Wraps the target module's loader so the patch applies right after it is executed."""

    def find_spec(self, name, path, target=None):  # noqa: ANN001, ANN201
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        loader = spec.loader
        original_exec = loader.exec_module

        def exec_module(module) -> None:  # noqa: ANN001
            original_exec(module)
            _slow_reporter(module)

        loader.exec_module = exec_module
        return spec


if PAUSE_S > 0:
    import importlib.util

    sys.meta_path.insert(0, _PatchAfterImport())
