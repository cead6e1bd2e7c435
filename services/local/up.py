"""`crossadapt up`: every registered service and its workers on this machine, until Ctrl-C.

Embedded defaults (nothing to install): the `filesystem://` broker, `file://` results and a local
store under `--workdir`. With `--redis URL --s3 ENDPOINT` the same processes use that Redis and S3
(credentials from CROSSADAPT_S3_ACCESS_KEY / CROSSADAPT_S3_SECRET_KEY). Ports are the services'
defaults when free, else free ones; the endpoints are printed once everything answers its health check.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from services.common.registry import ServiceSpec, service_specs
from services.local.stack import LocalPlatform, free_port

Echo = Callable[[str], None]


def _port_or_free(preferred: int) -> int:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", preferred))
        except OSError:
            return free_port()
    return preferred


def platform_settings(workdir: Path, redis_url: str | None, s3_endpoint: str | None, bucket: str) -> dict[str, str]:
    """The CROSSADAPT_* settings every process of the stack shares."""
    settings = {"home": str(workdir.resolve() / "home")}
    if redis_url:  # broker, results and operation records share one database (distinct key prefixes)
        settings.update(broker_url=redis_url, result_backend=redis_url)
    if s3_endpoint:
        access, secret = os.environ.get("CROSSADAPT_S3_ACCESS_KEY", ""), os.environ.get("CROSSADAPT_S3_SECRET_KEY", "")
        if not (access and secret):
            raise ValueError("--s3 needs CROSSADAPT_S3_ACCESS_KEY and CROSSADAPT_S3_SECRET_KEY in the environment")
        settings.update(store_url=f"s3://{bucket}", s3_endpoint=s3_endpoint, s3_access_key=access,
                        s3_secret_key=secret)
    return settings


def selected_services(names: list[str] | None) -> list[ServiceSpec]:
    specs = service_specs()
    if names is None:
        return [spec for spec in specs.values() if spec.queue is not None]  # the back-end services
    unknown = sorted(set(names) - set(specs))
    if unknown:
        raise ValueError(f"unknown service(s) {unknown}; installed: {sorted(specs)}")
    return [specs[name] for name in names]


def start_platform(workdir: Path, *, redis_url: str | None = None, s3_endpoint: str | None = None,
                   bucket: str = "crossadapt/store", workers: int = 1, services: list[str] | None = None,
                   default_ports: bool = False) -> LocalPlatform:
    """Start the servers and workers (returns once all are healthy); the caller stops them.

    `default_ports` (what `crossadapt up` asks for) puts each server on its service's port when that is free;
    otherwise every server gets a port the kernel hands out. A private platform (the switch's, a test's) must
    not take the defaults: two of them started at once would both find a default free, one server would fail
    to bind, and its health check would be answered by the other platform's server.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    specs = selected_services(services)
    platform = LocalPlatform(workdir, platform_settings(workdir, redis_url, s3_endpoint, bucket))
    for spec in specs:
        platform.ports[spec.name] = _port_or_free(spec.default_port) if default_ports else free_port()
        platform.metrics_ports[spec.name] = free_port()
    queue_names = tuple(sorted({spec.queue for spec in specs if spec.queue}))
    try:
        platform.start(workers=tuple(f"worker{i + 1}" for i in range(workers)) if queue_names else (),
                       servers=tuple(spec.name for spec in specs), queue_names=queue_names or None)
    except BaseException:
        platform.stop()
        raise
    return platform


def describe(platform: LocalPlatform) -> list[str]:
    lines = [f"{name:<20} grpc 127.0.0.1:{platform.ports[name]}   metrics http://127.0.0.1:"
             f"{platform.metrics_ports[name]}/metrics" for name in platform.servers]
    settings = platform.settings()
    lines.append(f"{'broker':<20} {settings.broker_url or 'filesystem://' + str(settings.broker_dir)}")
    lines.append(f"{'store':<20} {settings.store_url or settings.local_store_dir}")
    lines.append(f"{'logs':<20} {platform.workdir}")
    return lines


def run_up(*, workdir: Path, redis_url: str | None, s3_endpoint: str | None, bucket: str, workers: int,
           services: list[str] | None, echo: Echo = print, stop: threading.Event | None = None) -> None:
    """Start everything, print the endpoints, wait for Ctrl-C / SIGTERM (or `stop`), stop everything."""
    stop = stop or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        platform = start_platform(workdir, redis_url=redis_url, s3_endpoint=s3_endpoint, bucket=bucket,
                                  workers=workers, services=services, default_ports=True)
        try:
            for line in describe(platform):
                echo(line)
            echo("CrossAdapt platform is up; Ctrl-C stops it.")
            while not stop.wait(0.5):
                dead = [name for name, proc in {**platform.servers, **platform.workers}.items() if proc.poll() is not None]
                if dead:
                    echo(f"stopping: {', '.join(dead)} exited (see {platform.workdir})")
                    break
        finally:
            echo("stopping the platform …")
            platform.stop()
            echo("stopped.")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
