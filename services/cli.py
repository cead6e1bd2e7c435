"""The platform's commands, plugged into the core CLI (entry point `crossadapt.cli`): the core never imports this.

    crossadapt serve <service> [--port 50052 --metrics-port 9464]   # one gRPC server per registered service
    crossadapt worker --queues sampler,offline-distiller            # Celery worker for some queues
    crossadapt worker-health                                         # exit 0 if this host's worker answers ping
    crossadapt up [--redis URL --s3 ENDPOINT]                        # the whole stack on this machine
    crossadapt bench platform                                        # projection through the service vs in process
    crossadapt store put-model|put-split|ls                          # local checkpoints and splits into the store

Only typer is imported at module level, so `crossadapt --help` stays fast and works without the
`service` extra; each command imports the platform when it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

serve_app = typer.Typer(help="Run a platform gRPC service (until SIGTERM).", no_args_is_help=True,
                        add_completion=False)


def _registered() -> dict:
    from services.common.registry import service_specs

    return service_specs()


def _serve_command(name: str, description: str):  # noqa: ANN202 - a typer command
    def serve(
        host: Annotated[Optional[str], typer.Option(help="Bind address (default CROSSADAPT_GRPC_HOST).")] = None,
        port: Annotated[Optional[int], typer.Option(help="gRPC port (default CROSSADAPT_GRPC_PORT).")] = None,
        metrics_port: Annotated[Optional[int], typer.Option(help="Prometheus port; 0 disables.")] = None,
    ) -> None:
        from services.common.registry import get_spec
        from services.common.settings import get_settings

        overrides = {"grpc_host": host, "grpc_port": port, "metrics_port": metrics_port}
        settings = get_settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})
        get_spec(name).serve_function()(settings)

    serve.__doc__ = description or f"The {name} service."
    return serve


def _mount_serve_commands() -> None:
    try:
        specs = _registered()
    except Exception:  # noqa: BLE001 - the service extra is missing: `serve` stays empty
        specs = {}
    for name, spec in specs.items():
        serve_app.command(name)(_serve_command(name, spec.description))


def worker(
    queues: Annotated[Optional[str], typer.Option("--queues", "-Q",
                                                  help="Comma-separated queues (default: every service's).")] = None,
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", min=1, help="Worker processes.")] = 1,
    pool: Annotated[str, typer.Option(help="Celery pool: prefork (kills of a child are survived) or solo.")] = "prefork",
    hostname: Annotated[Optional[str], typer.Option("--hostname", "-n", help="Node name, e.g. w1@%h.")] = None,
    loglevel: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """A Celery worker for the platform's task queues (broker and backend from CROSSADAPT_* settings)."""
    from services.common import registry
    from services.common.celery_app import all_queues, get_celery_app

    known = all_queues()
    chosen = queues.split(",") if queues else known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise typer.BadParameter(f"unknown queue(s) {unknown}; known: {known}", param_hint="--queues")
    argv = ["worker", f"--queues={','.join(chosen)}", f"--concurrency={concurrency}", f"--pool={pool}",
            f"--loglevel={loglevel}", "--without-mingle", "--without-gossip"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app = get_celery_app()
    # Import only the consumed queues' task modules: a sampler worker needs no trainer code.
    app.conf.include = [module for spec in registry.service_specs().values() if spec.queue in chosen
                        for module in spec.task_modules]
    app.worker_main(argv)


def worker_health(
    hostname: Annotated[Optional[str], typer.Option("--hostname", "-n",
                                                    help="Worker node name (default celery@<this host>).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the reply.")] = 5.0,
) -> None:
    """Exit 0 if this host's Celery worker answers a ping over the broker (the image's worker health check)."""
    import socket

    from services.common.healthcheck import check_worker

    node = hostname or f"celery@{socket.gethostname()}"
    if not check_worker(node, timeout_s=timeout):
        typer.echo(f"worker {node} did not answer a ping within {timeout}s", err=True)
        raise typer.Exit(1)
    typer.echo(f"worker {node}: pong")


def up(
    workdir: Annotated[Path, typer.Option(help="Home of the embedded broker, stores and logs.")] = Path(".crossadapt-up"),
    redis: Annotated[Optional[str], typer.Option("--redis", help="Redis URL for broker, results and operations.")
                     ] = None,
    s3: Annotated[Optional[str], typer.Option("--s3", help="S3 endpoint host:port (credentials from "
                                                              "CROSSADAPT_S3_ACCESS_KEY / _SECRET_KEY).")] = None,
    bucket: Annotated[str, typer.Option(help="S3 bucket/prefix of the store, with --s3.")] = "crossadapt/store",
    workers: Annotated[int, typer.Option(min=1, help="Celery worker processes (each consumes every queue).")] = 1,
    services: Annotated[Optional[str], typer.Option(help="Comma-separated services (default: all).")] = None,
) -> None:
    """Start every service and its workers on this machine, print the endpoints, stop all on Ctrl-C."""
    from services.local.up import run_up

    run_up(workdir=workdir, redis_url=redis, s3_endpoint=s3, bucket=bucket, workers=workers,
           services=services.split(",") if services else None, echo=typer.echo)


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

    from services.local.bench_projection import run_platform_bench

    if backend not in ("embedded", "redis-s3"):
        raise typer.BadParameter(f"unknown backend {backend!r}; use embedded or redis-s3", param_hint="--backend")
    result = run_platform_bench(rows=rows, dim=dim, width=width, shards=shards, workers=workers,
                                backend=backend)  # type: ignore[arg-type]
    if as_json:
        typer.echo(json.dumps(result))
    else:
        for key, value in result.items():
            typer.echo(f"{key:<28} {value}")


def bench_switch_platform(
    config: Annotated[Path, typer.Option(help="The switch config to time.")] = Path("configs/demo.yaml"),
    redis_s3: Annotated[bool, typer.Option(help="Also time services on Redis + S3 (starts redis-server, weed).")
                        ] = True,
    rounds: Annotated[int, typer.Option(min=1, help="Run every mode this many times, interleaved; ratios are "
                                                   "per round, reported as median and range.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """The switch in process, through `--services local`, and through services on Redis + S3: wall times and ratios."""
    import json

    from services.local.bench_switch import run_switch_bench

    result = run_switch_bench(config, redis_s3=redis_s3, rounds=rounds)
    if as_json:
        typer.echo(json.dumps(result))
        return
    typer.echo(f"medians of {result['rounds']} round(s); ratios per round, [min, max]")
    typer.echo(f"{'mode':<20} {'wall s':>8} {'stages s':>9} {'upload s':>9} {'AUC %':>7} {'wall ×':>18} {'stages ×':>18}")
    for name, mode in result["modes"].items():
        wall_lo, wall_hi = mode["wall_ratio_range"]
        stages_lo, stages_hi = mode["stages_ratio_range"]
        typer.echo(f"{name:<20} {mode['wall_s']:>8.1f} {mode['stages_s']:>9.1f} {mode['upload_s']:>9.1f} "
                   f"{mode['student_auc']:>7.2f} {mode['wall_ratio']:>6.2f} [{wall_lo:.2f}, {wall_hi:.2f}] "
                   f"{mode['stages_ratio']:>6.2f} [{stages_lo:.2f}, {stages_hi:.2f}]")


def register(root: typer.Typer) -> None:
    """Mount `serve <service>`, `worker`, `worker-health` and `up` on the root CLI."""
    _mount_serve_commands()
    root.add_typer(serve_app, name="serve")
    root.command("worker")(worker)
    root.command("worker-health")(worker_health)
    root.command("up")(up)
    from services import store_cli

    store_cli.register(root)


def register_bench(bench: typer.Typer) -> None:
    bench.command("platform")(bench_platform)
    bench.command("switch-platform")(bench_switch_platform)
    try:
        from services.predictor.bench import bench_command
    except ImportError:  # the predictor's extra (kserve) is not installed
        return
    bench.command("predictor")(bench_command)
