"""The core stays free of the platform; `crossadapt serve` / `worker` / `up` plug in from `services` (entry points)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_MODULES = ("grpc", "celery", "kombu", "minio", "redis", "services", "prometheus_client")


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_core_imports_no_platform_module() -> None:
    code = (
        # Every core module (the packages load their members lazily, so importing a package alone proves little)
        # but the CLI, which mounts the plugins registered under its entry-point group by design (the next test).
        "import importlib, pathlib, sys, crossadapt\n"
        "root = pathlib.Path(crossadapt.__file__).parent\n"
        "for path in sorted(root.rglob('*.py')):\n"
        "    parts = ('crossadapt', *path.relative_to(root).with_suffix('').parts)\n"
        "    if parts[1] != 'cli':\n"
        "        importlib.import_module('.'.join(parts[:-1] if parts[-1] == '__init__' else parts))\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({PLATFORM_MODULES!r} + ('operators',))))"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_cli_mounts_the_platform_without_importing_grpc_or_celery() -> None:
    """The plugins' modules import typer only; gRPC, Celery, S3 load when a platform command runs."""
    heavy = tuple(m for m in PLATFORM_MODULES if m != "services")
    code = ("import sys, crossadapt.cli\n"
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({heavy!r})))")
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_core_sources_do_not_import_the_platform() -> None:
    """No exemptions: not one file of the core package names services, gRPC, Celery, S3 or Kubernetes."""
    pattern = re.compile(
        r"^\s*(from|import)\s+(grpc|celery|kombu|minio|redis|services|operators|kubernetes|kopf|kserve)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "crossadapt").rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_services_common_names_no_service() -> None:
    """`services.common` is shared plumbing: each service registers itself, common never names one."""
    names = ("projector", "sampler", "distiller", "drift", "predictor", "codistill")
    pattern = re.compile(r"^\s*(from|import)\s+services\.(?!common)", re.M)
    offenders = []
    for path in (ROOT / "services" / "common").rglob("*.py"):
        if "proto" in path.parts:  # generated stubs
            continue
        text = path.read_text()
        code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
        if pattern.search(text) or any(f'"{name}' in code or f"'{name}" in code for name in names):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_worker_rejects_an_unknown_queue(capsys: pytest.CaptureFixture[str]) -> None:
    from crossadapt.cli import run

    assert run(["worker", "--queues", "projector,nope"]) == 2
    assert "nope" in "".join(capsys.readouterr())


def test_serve_lists_the_projector(capsys: pytest.CaptureFixture[str]) -> None:
    from crossadapt.cli import run

    assert run(["serve", "--help"]) == 0
    assert "projector" in capsys.readouterr().out
