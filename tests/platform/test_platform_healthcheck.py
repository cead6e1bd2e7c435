"""The image health check: a worker is checked by a Celery ping of its own node, a server by gRPC health."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.healthcheck import check_worker, worker_node


@pytest.mark.parametrize(("argv", "node"), [
    (["crossadapt", "worker", "--queues", "sampler"], "celery@pod-1"),
    (["crossadapt", "worker", "--hostname", "w1@%h"], "w1@pod-1"),
    (["crossadapt", "worker", "--hostname=w2@%h"], "w2@pod-1"),
    (["crossadapt", "serve", "sampler"], None),
    ([], None),
])
def test_worker_node_from_the_container_command(argv: list[str], node: str | None) -> None:
    assert worker_node(argv, hostname="pod-1") == node


def test_a_running_worker_answers_and_a_missing_one_does_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from platform_stack import Stack

    stack = Stack.embedded(tmp_path / "stack")
    try:
        stack.start_worker("hc1", queues_=("projector",))
        import socket

        from services.common import celery_app

        app = celery_app.create_celery_app(stack.settings())
        monkeypatch.setattr(celery_app, "get_celery_app", lambda: app)

        assert check_worker(f"hc1@{socket.gethostname()}", timeout_s=5)
        assert not check_worker("nobody@nowhere", timeout_s=1)
    finally:
        stack.stop()
