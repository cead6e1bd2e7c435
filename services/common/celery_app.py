"""The one Celery app of the platform, configured from `PlatformSettings`.

Embedded (no CROSSADAPT_BROKER_URL): kombu's `filesystem://` transport under `home/broker` (its
control folder carries broadcasts, so remote control — ping, revoke — works) and the `file://`
result backend under `home/results`. Deployment: Redis for both.

Reliability: `acks_late` + `task_reject_on_worker_lost` (a task whose worker process dies is
redelivered; tasks are idempotent), prefetch 1 (a long task never holds a second one hostage),
retries with exponential backoff on transient errors (see `services.projector.tasks`).

Each service registers its own queue and task modules (`services.common.registry`);
`crossadapt worker --queues projector,sampler` consumes them.
"""

from __future__ import annotations

import os
import time
import uuid
from functools import lru_cache
from pathlib import Path

from celery import Celery
from celery.signals import setup_logging, worker_ready
from kombu import Queue
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

from services.common import registry
from services.common.logs import configure_logging
from services.common.settings import PlatformSettings, get_settings

#: Tasks no service routes (none today) land here rather than on some service's queue.
DEFAULT_QUEUE = "crossadapt"
_PROCESSED_MESSAGE_TTL_S = 3600
_DRAIN_SLICE_S = 0.25  # AtomicFilesystemTransport.drain_events


def all_queues() -> list[str]:
    """Every registered service's queue, plus the default one."""
    return sorted({DEFAULT_QUEUE, *registry.queues().values()})


def _precreate_exchange_tables(control_folder: Path) -> None:
    """Create the filesystem transport's exchange tables as `[]`, atomically, before any worker binds.

    kombu creates a missing table with open("wb") and only then locks it, so a second worker
    starting at the same moment can read the empty file and crash (JSONDecodeError). With the
    table present, every bind takes kombu's locked read-modify-write path.
    """
    exchanges = ["celery.pidbox", "reply.celery.pidbox", "celeryev", *all_queues()]
    for exchange in exchanges:
        target = control_folder / f"{exchange}.exchange"
        if target.exists():
            continue
        tmp = control_folder / f".{exchange}.{os.getpid()}.tmp"
        tmp.write_text("[]")
        try:
            os.link(tmp, target)  # fails if another process created it first: theirs is as good
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)


class _AtomicFilesystemChannel(filesystem.Channel):
    """kombu's filesystem channel, publishing each message complete in one step.

    kombu's `_put` creates `<ms>_<uuid>.<queue>.msg` with open("wb") and only then writes it; a worker
    polling the folder in between moves the still-empty file away, reads b"" and dies on the
    JSONDecodeError (the task is lost with it; seen on a loaded machine, 2 switches in 5). Here the
    message is written under a dot-name `_get` never takes (its queue part is not `<queue>.msg`) and
    renamed into place, which is atomic on one filesystem.
    """

    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        name = f"{round(time.monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"  # kombu's naming
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{name}.partial")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class AtomicFilesystemTransport(filesystem.Transport):
    """The embedded broker's transport (`filesystem://` with `_AtomicFilesystemChannel`)."""

    Channel = _AtomicFilesystemChannel

    def drain_events(self, connection: object, timeout: float | None = None) -> None:
        """Drain as kombu does, but give way to a worker's stop flag within a quarter second.

        A worker on this transport runs Celery's sync loop, which looks at its stop flag only between two
        drains of up to 2 s: a warm shutdown sat ~4 s in here before it began. The drain runs in slices and
        ends early (as a timeout: nothing was delivered) once the flag is up. Anything else that drains (a
        `control.ping` collecting replies) still waits its whole timeout: its process never sets the flag.
        """
        if timeout is None:
            return super().drain_events(connection)
        deadline = time.monotonic() + timeout
        while True:
            try:
                return super().drain_events(connection, timeout=max(min(deadline - time.monotonic(), _DRAIN_SLICE_S),
                                                                    0.001))
            except TimeoutError:  # socket.timeout, what kombu raises
                if time.monotonic() >= deadline or _worker_stopping():
                    raise


def _worker_stopping() -> bool:
    from celery.worker import state

    # By identity, as Celery's maybe_shutdown does: SIGTERM sets should_stop to EX_OK, which is 0 == False.
    return any(flag is not None and flag is not False for flag in (state.should_stop, state.should_terminate))


def broker_settings(settings: PlatformSettings) -> tuple[str, dict]:
    """Broker URL and transport options (the embedded folders are created here)."""
    if settings.embedded_broker:
        folders = {
            "data_folder_in": settings.broker_dir / "queue",
            "data_folder_out": settings.broker_dir / "queue",
            "control_folder": settings.broker_dir / "control",
            # Consumed messages are *moved* here: a rename on the same disk is atomic, so two
            # workers never both take one message (the default moves to /tmp, maybe another disk).
            "processed_folder": settings.broker_dir / "processed",
        }
        for folder in folders.values():
            folder.mkdir(parents=True, exist_ok=True)
        _precreate_exchange_tables(folders["control_folder"])
        options = {key: str(path) for key, path in folders.items()}
        options.update(store_processed=True, polling_interval=settings.broker_polling_interval_s)
        return "filesystem://", options
    # A worker killed outright leaves its task unacknowledged in Redis; kombu puts it back once
    # it is `visibility_timeout` old, found by a sweep every interval x throttle seconds (default
    # 10 x 10): sweep every interval instead, a quarter of the timeout at most.
    sweep_s = max(1, min(10, int(settings.visibility_timeout_s / 4)))
    return str(settings.broker_url), {
        "visibility_timeout": settings.visibility_timeout_s,
        "unacked_restore_interval": sweep_s,
        "unacked_restore_throttle": 1,
    }


def create_celery_app(settings: PlatformSettings) -> Celery:
    broker_url, transport_options = broker_settings(settings)
    result_backend = settings.result_backend
    if result_backend is None:
        settings.results_dir.mkdir(parents=True, exist_ok=True)
        result_backend = f"file://{settings.results_dir.resolve()}"
    app = Celery("crossadapt", set_as_current=False)
    app.conf.update(
        broker_url=broker_url,
        # embedded: kombu's filesystem transport with atomic publishing (see _AtomicFilesystemChannel)
        broker_transport=AtomicFilesystemTransport if settings.embedded_broker else None,
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        result_backend=result_backend,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_track_started=True,
        worker_prefetch_multiplier=1,
        # The embedded file:// backend has no native chords: `celery.chord_unlock` polls a fan-out's
        # results, by default every second, which held each chord's last step up to 1 s. (Redis joins
        # chords natively; this does not apply there.)
        result_chord_retry_interval=0.2,
        # Stopping joins the timer thread, which sleeps up to this long between looks at its stop flag.
        worker_timer_precision=0.2,
        # A pool process killed mid-task: report WorkerLostError (and requeue) after 1 s, not 10 s.
        worker_lost_wait=1.0,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_queues=[Queue(name) for name in all_queues()],
        task_default_queue=DEFAULT_QUEUE,
        task_routes={f"{spec.task_prefix}.*": {"queue": spec.queue}
                     for spec in registry.service_specs().values() if spec.queue},
        include=registry.task_modules(),
    )
    app.conf.crossadapt_settings = settings
    return app


@lru_cache(maxsize=1)
def get_celery_app() -> Celery:
    """The process-wide app, from the environment's settings."""
    return create_celery_app(get_settings())


def __getattr__(name: str) -> Celery:
    """`celery -A services.common.celery_app worker` finds `app` here (built on first access)."""
    if name in ("app", "celery"):
        return get_celery_app()
    raise AttributeError(name)


@setup_logging.connect
def _json_logging(**_: object) -> None:
    """Workers log JSON like the services (connecting here stops Celery configuring its own)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)


@worker_ready.connect
def _prune_processed_messages(sender: object = None, **_: object) -> None:
    """The filesystem broker keeps consumed messages; drop those older than an hour."""
    settings = get_settings()
    if not settings.embedded_broker:
        return
    cutoff = time.time() - _PROCESSED_MESSAGE_TTL_S
    for path in (settings.broker_dir / "processed").glob("*.msg"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
        except FileNotFoundError:
            continue
