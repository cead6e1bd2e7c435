"""operators/kubectl-modelswitch: each verb runs the kubectl command it promises (a fake kubectl records argv)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from operator_paths import ROOT

PLUGIN = ROOT / "operators" / "kubectl-modelswitch"


@pytest.fixture
def fake_kubectl(tmp_path: Path) -> Path:
    """A `kubectl` first on PATH that appends its arguments (as JSON) to calls.jsonl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.jsonl"
    script = bin_dir / "kubectl"
    script.write_text(f"""#!/usr/bin/env python3
import json, sys
with open({str(log)!r}, "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
print("ok")
""")
    script.chmod(0o755)
    return log


def plugin(log: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[list[str]]]:
    env = {**os.environ, "PATH": f"{log.parent / 'bin'}:{os.environ['PATH']}"}
    env.pop("KUBECTL", None)
    result = subprocess.run([str(PLUGIN), *args], capture_output=True, text=True, env=env, timeout=30)
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def test_plugin_is_an_executable_on_the_kubectl_plugin_naming() -> None:
    assert PLUGIN.name.startswith("kubectl-") and os.access(PLUGIN, os.X_OK)


@pytest.mark.parametrize(("verb", "paused"), [("pause", "true"), ("resume", "false")])
def test_pause_and_resume_patch_spec_paused(fake_kubectl: Path, verb: str, paused: str) -> None:
    result, calls = plugin(fake_kubectl, verb, "ctr-switch", "-n", "ml")
    assert result.returncode == 0, result.stderr
    assert calls == [["patch", "modelswitches.crossadapt.io", "ctr-switch", "--type", "merge", "-p",
                      f'{{"spec":{{"paused":{paused}}}}}', "-n", "ml"]]
    assert json.loads(calls[0][6]) == {"spec": {"paused": paused == "true"}}


@pytest.mark.parametrize("verb", ["promote", "abort", "retry"])
def test_actions_set_the_annotation(fake_kubectl: Path, verb: str) -> None:
    result, calls = plugin(fake_kubectl, verb, "ctr-switch", "--context", "prod")
    assert result.returncode == 0, result.stderr
    assert calls == [["annotate", "modelswitches.crossadapt.io", "ctr-switch", f"crossadapt.io/action={verb}",
                      "--overwrite", "--context", "prod"]]


def test_status_shows_the_resource_and_its_history(fake_kubectl: Path) -> None:
    result, calls = plugin(fake_kubectl, "status", "ctr-switch", "-n", "ml")
    assert result.returncode == 0, result.stderr
    assert calls[0] == ["get", "modelswitches.crossadapt.io", "ctr-switch", "-o", "wide", "-n", "ml"]
    assert calls[1][:5] == ["get", "modelswitches.crossadapt.io", "ctr-switch", "-n", "ml"]
    assert calls[1][5] == "-o" and ".status.history[*]" in calls[1][6]


@pytest.mark.parametrize(("args", "message"), [
    ((), "kubectl plugin for ModelSwitch"),
    (("promote",), "missing NAME"),
    (("promote", "-n"), "missing NAME"),
    (("explode", "x"), "unknown command 'explode'"),
])
def test_bad_usage_exits_2_without_calling_kubectl(fake_kubectl: Path, args: tuple[str, ...], message: str) -> None:
    result, calls = plugin(fake_kubectl, *args)
    assert result.returncode == 2 and message in result.stderr and calls == []


def test_help(fake_kubectl: Path) -> None:
    result, calls = plugin(fake_kubectl, "--help")
    assert result.returncode == 0 and "kubectl modelswitch promote NAME" in result.stdout and calls == []
