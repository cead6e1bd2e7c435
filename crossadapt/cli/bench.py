"""``crossadapt bench ...``: the benchmarks (figures for reports, not tests).

Other CLI modules add commands here through ``register_bench(app)`` (see ``crossadapt/cli/__init__.py``).
Each benchmark prints JSON with ``--json`` and a small table otherwise.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

app = typer.Typer(help="Benchmarks: training throughput, data preparation, projection, drift detection.",
                  no_args_is_help=True, add_completion=False)


def _show(result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(result))
        return
    width = max(len(k) for k in result)
    for key, value in result.items():
        typer.echo(f"{key:<{width}}  {value}")


@app.command("train")
def bench_train(
    arch: Annotated[str, typer.Option("--arch", help="Architecture (see `crossadapt models`).")] = "fibinet",
    embedding_dim: Annotated[Optional[int], typer.Option("--embedding-dim", help="Default: 8 for mlp, 16 otherwise.")] = None,
    hidden: Annotated[Optional[str], typer.Option("--hidden", help="Default: 64,32,4 for mlp, 256,128,16 otherwise.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 4096,
    steps: Annotated[int, typer.Option("--steps", help="Timed steps (after warm-up).")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", help="Untimed steps first.")] = 3,
    sparse: Annotated[bool, typer.Option("--sparse/--dense", help="Sparse embedding gradients + SparseAdam.")] = True,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: all available).")] = None,
    vocab_scale: Annotated[float, typer.Option("--vocab-scale", help="Shrink Criteo's vocabularies (1.0 = real size).")] = 1.0,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Training samples/s of a real Trainer.train_step (batch 4096, Criteo-shaped data), model FLOPs per
    sample, achieved GFLOP/s vs. an fp32 matmul measured in the same run, and peak RSS."""
    from crossadapt.bench.train import run_train_bench
    from crossadapt.cli.train import parse_hidden

    result = run_train_bench(
        arch, embedding_dim=embedding_dim, hidden_units=parse_hidden(hidden) if hidden else None,
        batch_size=batch_size, steps=steps, warmup=warmup, sparse_embedding=sparse, num_threads=threads,
        vocab_scale=vocab_scale, device=device,
    )
    _show(result, as_json)


@app.command("data")
def bench_data(
    rows: Annotated[int, typer.Option("--rows", help="Rows of the synthetic Criteo-format log.")] = 1_000_000,
    seed: Annotated[int, typer.Option("--seed", help="Synthetic seed.")] = 0,
    sizes: Annotated[str | None, typer.Option(
        "--sizes", help="Comma-separated row counts (e.g. 1000000,3000000,10000000): streaming prepare at each, "
                        "side by side with the in-memory path at 1M, as a table.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Synthetic generation and `prepare` of a Criteo-format TSV: rows/s and peak RSS
    (crossadapt.bench.data.run_data_bench; with --sizes, run_data_scaling)."""
    from crossadapt.bench.data import format_scaling, run_data_bench, run_data_scaling

    if sizes is None:
        _show(run_data_bench(rows, seed), as_json)
        return
    try:
        counts = tuple(int(size) for size in sizes.split(","))
    except ValueError:
        raise typer.BadParameter(f"--sizes must be comma-separated integers, got {sizes!r}") from None
    result = run_data_scaling(counts, seed)
    if as_json:
        _show(result, True)
    else:
        typer.echo(format_scaling(result))


@app.command("projection")
def bench_projection(
    rows: Annotated[int, typer.Option("--rows", help="Table rows.")] = 10_000_000,
    d_in: Annotated[int, typer.Option("--d-in", help="Teacher width.")] = 16,
    d_out: Annotated[int, typer.Option("--d-out", help="Student width.")] = 32,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Embedding-table projection time and peak memory (crossadapt.bench.projection, a fresh subprocess)."""
    from crossadapt.bench.projection import run_projection_bench

    _show(run_projection_bench(rows, d_in, d_out), as_json)


@app.command("drift")
def bench_drift(
    rows: Annotated[int, typer.Option("--rows", help="Rows of Criteo-shaped data.")] = 2_000_000,
    metric: Annotated[str, typer.Option("--metric", help="js or kl.")] = "js",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Distribution-shift detection throughput (crossadapt.bench.drift)."""
    from crossadapt.bench.drift import run_drift_bench

    _show(run_drift_bench(rows, metric), as_json)
