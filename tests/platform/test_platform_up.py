"""`crossadapt up`: every back-end service and a worker start, answer health checks, and stop on SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.local.stack import log_tail, wait_for
from services.local.up import platform_settings, selected_services

CLI = [sys.executable, "-c", "from crossadapt.cli import main; main()"]


def test_up_starts_every_backend_service_and_stops_cleanly_on_ctrl_c(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*CLI, "up", "--workdir", str(tmp_path / "stack")], stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def up_and_running() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"crossadapt up exited:\n{log_tail(log)}")
            return "platform is up" in log.read_text()

        wait_for(up_and_running, 240, "crossadapt up")
        text = log.read_text()
        endpoints = dict(re.findall(r"^(\S+)\s+grpc (127\.0\.0\.1:\d+)", text, re.M))
        expected = {spec.name for spec in selected_services(None)}
        assert set(endpoints) == expected and "projector" in expected
        for name, address in endpoints.items():
            with grpc.insecure_channel(address) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
                assert reply.status == health_pb2.HealthCheckResponse.SERVING, name
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log_tail(log)
        assert "stopped." in log.read_text()
        for address in endpoints.values():  # nothing is left listening
            with grpc.insecure_channel(address) as channel:
                try:
                    grpc.channel_ready_future(channel).result(timeout=1)
                    raise AssertionError(f"{address} still answers after up stopped")
                except grpc.FutureTimeoutError:
                    pass
    finally:
        if proc.poll() is None:
            proc.kill()
            time.sleep(0.5)


def test_external_redis_and_s3_settings(monkeypatch) -> None:  # noqa: ANN001
    monkeypatch.setenv("CROSSADAPT_S3_ACCESS_KEY", "key")
    monkeypatch.setenv("CROSSADAPT_S3_SECRET_KEY", "secret")
    settings = platform_settings(Path("/tmp/x"), "redis://10.0.0.5:6379/2", "minio:9000", "models/ctr")
    assert settings["broker_url"] == settings["result_backend"] == "redis://10.0.0.5:6379/2"
    assert settings["store_url"] == "s3://models/ctr" and settings["s3_endpoint"] == "minio:9000"
    monkeypatch.delenv("CROSSADAPT_S3_SECRET_KEY")
    try:
        platform_settings(Path("/tmp/x"), None, "minio:9000", "b")
        raise AssertionError("missing credentials accepted")
    except ValueError as exc:
        assert "CROSSADAPT_S3_SECRET_KEY" in str(exc)


def test_unknown_service_is_refused() -> None:
    try:
        selected_services(["projector", "nope"])
        raise AssertionError("unknown service accepted")
    except ValueError as exc:
        assert "nope" in str(exc)


def test_begin_stop_lets_an_idle_worker_finish_its_warm_shutdown(tmp_path: Path) -> None:
    """The switch signals its stack to stop before scoring the student and waits after the report: the worker's
    warm shutdown (seconds of Celery's loop and pool joins) runs meanwhile and ends cleanly, not by SIGKILL."""
    from services.local.stack import LocalPlatform

    platform = LocalPlatform.embedded(tmp_path / "stack")
    try:
        worker = platform.start_worker("w1", ("projector",))
        platform.begin_stop()
        signalled = time.monotonic()
        platform.begin_stop()  # a second call sends nothing more
        wait_for(lambda: worker.poll() is not None, 60, "the worker's warm shutdown")
        shutdown_s = time.monotonic() - signalled
        platform.stop()  # already down: returns at once
        assert worker.returncode == 0, log_tail(platform.log("w1"))
        assert "Warm shutdown" in platform.log("w1").read_text()
        # Not instant (so overlapping it with other work is worth it), but within stop()'s default grace: the
        # embedded transport's drain ends within a quarter second of the stop flag (without that: 6.4-8 s, one
        # 2-s drain after another, past the grace, ending in SIGKILL).
        assert 0.5 < shutdown_s < 5.0, shutdown_s
    finally:
        platform.stop()


def test_stop_kills_what_outlasts_its_grace(tmp_path: Path) -> None:
    from services.local.stack import LocalPlatform

    platform = LocalPlatform.embedded(tmp_path / "stack")
    try:
        worker = platform.start_worker("w1", ("projector",))
        began = time.monotonic()
        platform.stop(grace_s=0.2)
        assert worker.returncode == -signal.SIGKILL and time.monotonic() - began < 5
    finally:
        platform.stop()
