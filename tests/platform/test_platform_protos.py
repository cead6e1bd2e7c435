"""The API protos: buf lint clean, Python stubs reproducible by scripts/gen-protos and importable."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STUBS = ROOT / "services" / "common" / "proto"


def _buf() -> str:
    local = ROOT / ".cache" / "buf" / "node_modules" / ".bin" / "buf"
    found = str(local) if local.exists() else shutil.which("buf")
    if found is None:
        pytest.fail("buf is not installed: run scripts/install-test-deps (npm @bufbuild/buf into .cache/buf)")
    return found


def _lint(folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([_buf(), "lint"], cwd=folder, capture_output=True, text=True, timeout=120)


def test_buf_lint_is_clean() -> None:
    result = _lint(ROOT / "protos")
    assert result.returncode == 0, result.stdout + result.stderr


def test_buf_lint_rejects_a_violation(tmp_path: Path) -> None:
    copy = tmp_path / "protos"
    shutil.copytree(ROOT / "protos", copy)
    bad = copy / "crossadapt" / "v1" / "common.proto"
    bad.write_text(bad.read_text() + "\nenum color { RED = 0; }\n")  # no UNSPECIFIED zero, not PascalCase
    result = _lint(copy)
    assert result.returncode != 0 and "common.proto" in result.stdout


def test_checked_in_stubs_match_a_fresh_generation(tmp_path: Path) -> None:
    out = tmp_path / "stubs"
    subprocess.run([sys.executable, str(ROOT / "scripts" / "gen-protos"), "--out", str(out)], check=True,
                   capture_output=True, timeout=120)
    fresh = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    checked_in = {p.name: p.read_bytes() for p in STUBS.iterdir() if p.is_file()}
    assert set(fresh) == set(checked_in), "stub files differ: run scripts/gen-protos"
    stale = sorted(name for name in fresh if fresh[name] != checked_in[name])
    assert not stale, f"stale stubs {stale}: run scripts/gen-protos"
    assert {"common_pb2.py", "projector_pb2.py", "projector_pb2_grpc.py", "projector_pb2.pyi"} <= set(fresh)


def test_stubs_import_relatively_and_leave_the_core_package_alone() -> None:
    for path in STUBS.glob("*.py*"):
        text = path.read_text()
        assert "from crossadapt" not in text and "import crossadapt" not in text, path.name
    code = (
        "import crossadapt, sys\n"
        "from services.common.proto import projector_pb2\n"
        "assert sys.modules['crossadapt'].__file__.endswith('crossadapt/__init__.py')\n"
        "assert 'crossadapt.v1' not in sys.modules\n"
        "print(projector_pb2.DESCRIPTOR.services_by_name['ProjectorService'].full_name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "crossadapt.v1.ProjectorService"


def test_operation_message_carries_state_progress_error_and_result() -> None:
    from services.common.proto import common_pb2

    message = common_pb2.Operation(id="x", state=common_pb2.OPERATION_STATE_FAILED, progress=0.5,
                                   error=common_pb2.OperationError(code=15, code_name="DATA_LOSS", field="f"))
    message.checkpoint.name = "student"
    parsed = common_pb2.Operation.FromString(message.SerializeToString())
    assert parsed.error.code == 15 and parsed.WhichOneof("result") == "checkpoint" and parsed.progress == 0.5
