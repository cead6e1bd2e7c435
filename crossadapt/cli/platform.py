"""``crossadapt serve <service>`` and ``crossadapt worker``: run the platform's processes.

The platform (gRPC, Celery, S3) is imported inside the commands only, so the core CLI works
without the `platform` extra installed. Settings come from ``CROSSADAPT_*`` variables
(``services.common.settings``); the options below override the most common ones.

    crossadapt serve projector --port 50051 --metrics-port 9464
    crossadapt worker --queues projector --concurrency 1
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

SERVICES = ("projector",)

serve_app = typer.Typer(help="Run a platform gRPC service (until SIGTERM).", no_args_is_help=True,
                        add_completion=False)


@serve_app.command("projector")
def serve_projector(
    host: Annotated[Optional[str], typer.Option(help="Bind address (default CROSSADAPT_GRPC_HOST).")] = None,
    port: Annotated[Optional[int], typer.Option(help="gRPC port (default CROSSADAPT_GRPC_PORT).")] = None,
    metrics_port: Annotated[Optional[int], typer.Option(help="Prometheus port; 0 disables.")] = None,
) -> None:
    """The projector: StartProjection / GetOperation / WatchOperation / CancelOperation, plus health and reflection."""
    from services.common.settings import get_settings
    from services.projector.server import main

    overrides = {"grpc_host": host, "grpc_port": port, "metrics_port": metrics_port}
    settings = get_settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
    main(settings)


def worker(
    queues: Annotated[str, typer.Option("--queues", "-Q", help="Comma-separated queues (one per service).")] = "projector",
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Worker processes.")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (kills of a child are survived) or solo.")] = "prefork",
    hostname: Annotated[Optional[str], typer.Option("--hostname", "-n", help="Node name, e.g. w1@%h.")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """A Celery worker for the platform's task queues (broker and backend from CROSSADAPT_* settings)."""
    from services.common.celery_app import QUEUES, get_celery_app

    unknown = sorted(set(queues.split(",")) - set(QUEUES.values()))
    if unknown:
        raise typer.BadParameter(f"unknown queue(s) {unknown}; known: {sorted(QUEUES.values())}", param_hint="--queues")
    argv = ["worker", f"--queues={queues}", f"--concurrency={concurrency}", f"--pool={pool}",
            f"--loglevel={loglevel}", "--without-mingle", "--without-gossip"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    get_celery_app().worker_main(argv)


def bench_platform(
    rows: Annotated[int, typer.Option(help="Table rows.")] = 10_000_000,
    dim: Annotated[int, typer.Option(help="Teacher width d_T.")] = 16,
    width: Annotated[int, typer.Option(help="Student width d_S.")] = 32,
    shards: Annotated[int, typer.Option(help="Row shards.")] = 8,
    workers: Annotated[int, typer.Option(help="Worker processes (concurrency 1 each).")] = 2,
    backend: Annotated[str, typer.Option(help="embedded (files only) or redis-s3 (starts redis-server and weed).")
                       ] = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Projection through the service (gRPC + Celery workers + store) vs. in-process project_table."""
    import json

    from crossadapt.bench.platform import run_platform_bench

    if backend not in ("embedded", "redis-s3"):
        raise typer.BadParameter(f"unknown backend {backend!r}; use embedded or redis-s3", param_hint="--backend")
    result = run_platform_bench(rows=rows, dim=dim, width=width, shards=shards, workers=workers,
                                backend=backend)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key:<28} {value}")


def register(root: typer.Typer) -> None:
    """Mount `serve <service>` and `worker` on the root CLI."""
    root.add_typer(serve_app, name="serve")
    root.command("worker")(worker)


def register_bench(bench: typer.Typer) -> None:
    bench.command("platform")(bench_platform)


app = typer.Typer(help="Platform processes.", no_args_is_help=True, add_completion=False)
register(app)
app.command("bench")(bench_platform)

if __name__ == "__main__":
    app()
