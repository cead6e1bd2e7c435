"""`crossadapt switch` run as a user runs it (a subprocess), for the platform switch tests.

A run that fails or overruns its time says why: its own output and the tail of every server's and
worker's log of the local platform it started (`<out>/platform/*.log`), so a hang on a CI machine is
diagnosable from the test report alone. The time limit sits below pytest-timeout's (600 s), which
would kill the test without any of that.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from services.local.stack import log_tail

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-c", "from crossadapt.cli import main; main()"]
SWITCH_TIMEOUT_S = 420


def _platform_logs(out: Path) -> str:
    logs = sorted((out / "platform").glob("*.log"))
    return "\n".join(f"--- {log.name}\n{log_tail(log, 25)}" for log in logs) or "(no platform logs)"


def _text(output: str | bytes | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else output or ""


def run_switch(config: Path, out: Path, *extra: str) -> dict:
    """`crossadapt switch --config CONFIG --out OUT EXTRA…`; its results.json, or a failure naming the cause."""
    try:
        result = subprocess.run([*CLI, "switch", "--config", str(config), "--out", str(out), *extra],
                                capture_output=True, text=True, timeout=SWITCH_TIMEOUT_S, cwd=ROOT)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the switch overran {SWITCH_TIMEOUT_S} s\n{_text(exc.stdout)[-3000:]}"
                             f"{_text(exc.stderr)[-3000:]}\n{_platform_logs(out)}") from None
    assert result.returncode == 0, f"{result.stdout[-3000:]}{result.stderr[-3000:]}\n{_platform_logs(out)}"
    return json.loads((out / "results.json").read_text())
