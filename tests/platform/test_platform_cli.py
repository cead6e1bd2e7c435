"""The core stays free of the platform; `crossadapt serve` / `crossadapt worker` are mounted lazily."""

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


def test_core_and_cli_import_no_platform_module() -> None:
    code = (
        "import sys, crossadapt, crossadapt.cli, crossadapt.cli.platform, crossadapt.checkpoint, crossadapt.transfer\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({PLATFORM_MODULES!r})))"
    )
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_core_sources_do_not_import_the_platform() -> None:
    pattern = re.compile(r"^\s*(from|import)\s+(grpc|celery|kombu|minio|redis|services|kubernetes|kopf|kserve)\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "crossadapt").rglob("*.py")
                 if p.name != "platform.py" and pattern.search(p.read_text())]
    assert offenders == []
    for lazy in (ROOT / "crossadapt" / "cli" / "platform.py", ROOT / "crossadapt" / "bench" / "platform.py"):
        top_level = [line for line in lazy.read_text().splitlines()
                     if re.match(r"^(from|import) (services|celery|grpc|minio|redis)", line)]
        assert top_level == [], lazy  # only inside the functions that run the platform


def test_worker_rejects_an_unknown_queue(capsys: pytest.CaptureFixture[str]) -> None:
    from crossadapt.cli import run

    assert run(["worker", "--queues", "projector,nope"]) == 2
    assert "nope" in "".join(capsys.readouterr())


def test_serve_lists_the_projector(capsys: pytest.CaptureFixture[str]) -> None:
    from crossadapt.cli import run

    assert run(["serve", "--help"]) == 0
    assert "projector" in capsys.readouterr().out
