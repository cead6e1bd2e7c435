"""Settings from CROSSADAPT_* variables and the Celery app built from them (embedded and Redis)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.common.celery_app import all_queues, create_celery_app
from services.common.registry import service_specs
from services.common.settings import PlatformSettings


def test_environment_prefix_and_typos_rejected(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CROSSADAPT_GRPC_PORT", "6123")
    monkeypatch.setenv("CROSSADAPT_HOME", str(tmp_path))
    settings = PlatformSettings()
    assert settings.grpc_port == 6123 and settings.home == tmp_path and settings.embedded_broker
    with pytest.raises(ValidationError):
        PlatformSettings(grpc_prot=1)  # a misspelt field is an error, not silently ignored
    monkeypatch.setenv("CROSSADAPT_GRPC_PORT", "not-a-port")
    with pytest.raises(ValidationError):
        PlatformSettings()


def test_s3_store_needs_credentials(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="ACCESS_KEY"):
        PlatformSettings(home=tmp_path, store_url="s3://bucket/prefix")
    settings = PlatformSettings(home=tmp_path, store_url="s3://b/p", s3_access_key="a", s3_secret_key="s")
    assert settings.uses_s3 and "'s'" not in repr(settings)  # the secret is masked in reprs and logs
    with pytest.raises(ValidationError):
        PlatformSettings(home=tmp_path, s3_part_size=1024)  # S3 parts are >= 5 MiB


def test_embedded_app_uses_the_filesystem_broker_and_file_results(tmp_path: Path) -> None:
    settings = PlatformSettings(home=tmp_path)
    conf = create_celery_app(settings).conf
    assert conf.broker_url == "filesystem://"
    options = conf.broker_transport_options
    assert options["store_processed"] is True
    assert Path(options["processed_folder"]).parent == Path(options["data_folder_in"]).parent == tmp_path / "broker"
    assert conf.result_backend == f"file://{(tmp_path / 'results').resolve()}"
    control = Path(options["control_folder"])
    for exchange in ("celery.pidbox", "reply.celery.pidbox", "projector"):
        assert json.loads((control / f"{exchange}.exchange").read_text()) == []  # pre-created, valid JSON
    assert conf.task_acks_late and conf.task_reject_on_worker_lost and conf.worker_prefetch_multiplier == 1
    assert conf.task_routes["crossadapt.projector.*"] == {"queue": "projector"}
    names = [q.name for q in conf.task_queues]
    assert names == all_queues() and {"crossadapt", "projector"} <= set(names)  # the default + each service's
    for spec in service_specs().values():  # every registered service's tasks go to its own queue
        if spec.queue:
            assert conf.task_routes[f"{spec.task_prefix}.*"] == {"queue": spec.queue}


def test_existing_exchange_tables_are_kept(tmp_path: Path) -> None:
    control = tmp_path / "broker" / "control"
    control.mkdir(parents=True)
    bound = [["projector", "", "projector"]]
    (control / "projector.exchange").write_text(json.dumps(bound))
    create_celery_app(PlatformSettings(home=tmp_path))
    assert json.loads((control / "projector.exchange").read_text()) == bound


def test_embedded_broker_publishes_a_message_complete_or_not_at_all(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """kombu's filesystem transport created the message file empty and wrote it after: a worker polling in
    between took the empty file and died (JSONDecodeError). While a message is being written a consumer
    finds nothing; once published it reads the whole message."""
    from queue import Empty

    from services.common import celery_app

    app = create_celery_app(PlatformSettings(home=tmp_path))
    assert app.conf.broker_transport is celery_app.AtomicFilesystemTransport
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        assert isinstance(channel, celery_app._AtomicFilesystemChannel)
        seen_while_writing = []
        replace = celery_app.os.replace

        def consume_then_replace(src: str, dst: str) -> None:
            try:
                seen_while_writing.append(channel._get("projector"))
            except Empty:
                seen_while_writing.append(None)
            replace(src, dst)

        monkeypatch.setattr(celery_app.os, "replace", consume_then_replace)
        channel._put("projector", {"body": "x" * 10_000})
        assert seen_while_writing == [None]
        assert channel._get("projector") == {"body": "x" * 10_000}


def test_embedded_drain_outside_a_stopping_worker_waits_its_whole_timeout(tmp_path: Path) -> None:
    """The embedded transport drains in quarter-second slices so that a stopping worker leaves within one
    (a real worker's warm shutdown, tests/platform/test_platform_up.py: 6.4 s without that, ~3.2 s with it);
    any other drain that finds nothing still waits out its timeout, as a `control.ping` collecting replies
    (`crossadapt worker-health`) needs."""
    import time

    from celery.worker import state
    from kombu import Consumer, Queue

    assert state.should_stop is None and state.should_terminate is None  # no worker runs in this process
    app = create_celery_app(PlatformSettings(home=tmp_path))
    with app.connection_for_read() as connection, Consumer(connection, queues=[Queue("projector")]):
        began = time.monotonic()
        with pytest.raises(TimeoutError):  # socket.timeout
            connection.drain_events(timeout=1.5)
        assert time.monotonic() - began >= 1.5


def test_redis_app_sweeps_unacknowledged_tasks_within_the_visibility_timeout(tmp_path: Path) -> None:
    settings = PlatformSettings(home=tmp_path, broker_url="redis://h:1/0", result_backend="redis://h:1/1",
                                visibility_timeout_s=20)
    conf = create_celery_app(settings).conf
    assert conf.broker_url == "redis://h:1/0" and conf.result_backend == "redis://h:1/1"
    options = conf.broker_transport_options
    assert options["visibility_timeout"] == 20
    assert options["unacked_restore_interval"] * options["unacked_restore_throttle"] <= 20 / 4


def test_celery_cli_finds_the_app() -> None:
    import celery

    from services.common import celery_app

    assert isinstance(celery_app.app, celery.Celery)  # `celery -A services.common.celery_app worker`
