"""`crossadapt operator run` as a real process: kubeconfig login, liveness endpoint, real gRPC clients, SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from operator_harness import Emulator, add_switch, declare_resources, status, wait_for

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(120)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _kubeconfig(path: Path, server: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "operator", "user": {"token": "test-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "operator"}}],
    }))
    return path


def _liveness(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status


async def test_operator_process_logs_in_serves_liveness_and_stops_on_sigterm(kmock: Emulator, tmp_path: Path) -> None:
    declare_resources(kmock)
    add_switch(kmock, "cli")
    liveness = f"http://127.0.0.1:{_free_port()}/healthz"
    unreachable = f"127.0.0.1:{_free_port()}"  # nothing listens: the real gRPC client gets UNAVAILABLE
    env = {**os.environ, "KUBECONFIG": str(_kubeconfig(tmp_path / "kubeconfig", str(kmock.url))),
           "CROSSADAPT_OPERATOR_PROJECTOR_ADDRESS": unreachable, "CROSSADAPT_OPERATOR_RPC_TIMEOUT_S": "1",
           "CROSSADAPT_OPERATOR_RECONCILE_INTERVAL_S": "0.2"}
    crossadapt = str(Path(sys.executable).parent / "crossadapt")
    process = await asyncio.create_subprocess_exec(crossadapt, "operator", "run", "-n", "ml", "--liveness", liveness,
                                                   env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.STDOUT)
    try:
        def unavailable() -> bool:
            conditions = {c["type"]: c for c in status(kmock, "cli").get("conditions", [])}
            return conditions.get("ServicesAvailable", {}).get("reason") == "UNAVAILABLE"

        await wait_for("the projector reported unreachable", unavailable, timeout=60)
        current = status(kmock, "cli")
        assert current["phase"] == "Projecting" and "projector: UNAVAILABLE" in next(
            c["message"] for c in current["conditions"] if c["type"] == "ServicesAvailable")
        assert await asyncio.to_thread(_liveness, liveness) == 200
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), timeout=30)
    assert process.returncode == 0, output.decode()[-3000:]
