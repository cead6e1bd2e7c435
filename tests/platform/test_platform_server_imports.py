"""The gRPC servers are thin adapters: they validate, record and send tasks, and never load the engine.

A server that imported torch with its tasks made the local stack (five servers and a worker) take 8.7-9.8 s to
start instead of 5.1-5.9 s on 2 vCPUs, and each running server held ~343 MB instead of ~163 MB
(`python -m services.local.bench_startup`). The training modules load in the workers, before their pools fork
(services.common.task_steps.worker_module).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVERS = ("projector", "sampler", "offline_distiller", "online_codistiller", "drift_detector")


def torch_mapped(pid: int) -> bool:
    """Whether process `pid` has loaded torch's native library."""
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def _import_in_fresh_interpreter(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_no_server_module_imports_torch() -> None:
    # One fresh interpreter, the servers imported one at a time: the first that pulls torch in is named.
    code = (
        "import importlib, sys\n"
        f"for name in {SERVERS!r}:\n"
        "    importlib.import_module(f'services.{name}.server')\n"
        "    if 'torch' in sys.modules:\n"
        "        sys.exit(f'services.{name}.server imported torch')\n"
        # and the command line that starts them (`crossadapt serve NAME`) mounts every command group first
        "sys.argv = ['crossadapt', 'serve', '--help']\n"
        "from crossadapt.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "if 'torch' in sys.modules:\n"
        "    sys.exit('crossadapt serve imported torch')\n"
    )
    result = _import_in_fresh_interpreter(code)
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("service", ["offline_distiller", "online_codistiller"])
def test_a_training_service_tasks_module_leaves_the_engine_to_the_worker(service: str) -> None:
    # The server imports its tasks to send them; the training pipeline loads on first use, or at worker_init.
    code = (
        "import sys\n"
        f"import services.{service}.tasks as tasks\n"
        "assert 'torch' not in sys.modules, 'the tasks module imported torch'\n"
        "module = tasks.pipeline()\n"
        f"assert module.__name__ == 'services.{service}.pipeline' and 'torch' in sys.modules\n"
    )
    result = _import_in_fresh_interpreter(code)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_check_sees_torch_when_a_process_has_loaded_it() -> None:
    # The runtime check the platform tests use on live servers and workers, on both answers.
    import torch  # noqa: F401 - loaded in this process

    assert torch_mapped(int(Path("/proc/self").resolve().name))
    bare = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        assert not torch_mapped(bare.pid)
    finally:
        bare.communicate(b"")
