"""`crossadapt switch --config FILE [--out DIR]` and `crossadapt bench paper --preset … --json OUT`.

Mounting (the lead's `crossadapt/cli/__init__.py`)::

    from crossadapt.cli import switch as switch_cli
    switch_cli.register(app)              # adds the `switch` command to the root app
    switch_cli.register_bench(bench_app)  # adds `paper` to the `bench` group

A bad config exits 2 with one line on stderr naming the file and the field; other user errors (a
missing dataset folder, a corrupt checkpoint) propagate to the root CLI, which prints one line, exit 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from crossadapt.transfer.experiments.results import PaperBenchResults, SwitchResults
from crossadapt.transfer.switch_config import ConfigError, load_switch_config

_err = Console(stderr=True, highlight=False, soft_wrap=True)
_out = Console(highlight=False)


def _log(message: str) -> None:
    _err.print(message, style="dim", markup=False)


def _fail(message: str) -> None:
    _err.print(f"error: {message}", markup=False)
    raise typer.Exit(2)


def switch_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Switch config (YAML or JSON).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: the config's output_dir).")] = None,
    services: Annotated[str | None, typer.Option(
        "--services", help="Run the stages through the platform's services: 'local' starts them here; "
                           "HOST (default ports) or NAME=HOST:PORT,... uses running ones.")] = None,
) -> None:
    """Run the whole switch: data → teacher → projection → sample → progressive KD → drift → co-distillation → report."""
    try:
        cfg = load_switch_config(config)
    except ConfigError as exc:
        _fail(f"invalid config {exc}")
    out_dir = out if out is not None else cfg.output_dir
    if services is not None:
        results = _platform_backend()(cfg, out_dir, services=services, log=_log)
    else:
        from crossadapt.transfer.switch import run_switch  # heavy imports (torch) only once the config is valid

        results = run_switch(cfg, out_dir, log=_log)
    print_switch_table(results, out_dir)


SWITCH_BACKENDS = "crossadapt.switch_backends"


def _platform_backend():  # noqa: ANN202 - the plugin's callable
    """`run_switch_through_services` of the installed platform (entry point), without importing it by name."""
    from importlib.metadata import entry_points

    found = [entry for entry in entry_points(group=SWITCH_BACKENDS) if entry.name == "services"]
    if not found:
        _fail("--services needs the platform (pip install 'crossadapt[service]'): no switch backend is installed")
    try:
        return found[0].load()
    except ImportError as exc:
        _fail(f"--services: the platform failed to import ({exc}); install the 'service' extra")


def print_switch_table(results: SwitchResults, out_dir: Path) -> None:
    table = Table(title="CrossAdapt switch — test split")
    for column, justify in (("model", "left"), ("role", "left"), ("AUC (%)", "right"), ("LogLoss", "right"),
                            ("train s", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for score in [results.teacher, results.student, *results.baselines]:
        secs = "–" if score.train_seconds is None else f"{score.train_seconds:.1f}"
        table.add_row(score.name, score.role, f"{100 * score.auc:.2f}", f"{score.logloss:.4f}", secs)
    _out.print(table)
    if results.operations:
        ops = Table(title=f"Platform operations ({results.platform})")
        for column in ("service", "operation", "state", "result", "seconds"):
            ops.add_column(column, justify="right" if column == "seconds" else "left")
        for op in results.operations:
            ops.add_row(op.service, op.operation_id, op.state, op.result, f"{op.seconds:.1f}")
        _out.print(ops)
    _out.print(f"report: {out_dir / 'report.md'}")
    _out.print(f"student checkpoint: {results.student_checkpoint} (parent {results.teacher_checkpoint})")


def bench_paper_command(
    preset: Annotated[str, typer.Option("--preset", help="micro | smoke | standard | related | long-history")] = "smoke",
    data: Annotated[
        str | None,
        typer.Option("--data", help="A prepared dataset folder, 'synthetic' (default) or 'movielens'."),
    ] = None,
    json_out: Annotated[Path, typer.Option("--json", help="Where the results JSON goes.")] = Path("paper.json"),
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Work folder: cached data/teachers, report.md, plots.")
    ] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", min=1, help="Override the preset's seed count.")] = None,
) -> None:
    """Methods × seeds × teacher→student pairs, ablations and width table (paper Tables 1-3)."""
    from crossadapt.transfer.experiments.paper_bench import PRESETS, run_paper_bench

    if preset not in PRESETS:
        _fail(f"--preset must be one of {sorted(PRESETS)}, got {preset!r}")
    work = out_dir if out_dir is not None else json_out.parent / f"{json_out.stem}-work"
    results = run_paper_bench(PRESETS[preset], data=data, json_out=json_out, work_dir=work, seeds=seeds, log=_log)
    print_bench_table(results)
    _out.print(f"json: {json_out}\nreport: {work / 'report.md'}")


def print_bench_table(results: PaperBenchResults) -> None:
    for setting in [results.main, *results.extra_settings]:
        table = Table(title=f"{setting.name}" + (f" — oracle AUC {100 * setting.oracle_auc:.2f}%"
                                                 if setting.oracle_auc is not None else ""))
        for column in ("pair", "method", "AUC (%)", "LogLoss", "train s"):
            table.add_column(column)
        for pair in setting.pairs:
            for name, stats in pair.methods.items():
                table.add_row(f"{pair.teacher}→{pair.student}", name,
                              f"{100 * stats.auc_mean:.2f} ± {100 * stats.auc_std:.2f}",
                              f"{stats.logloss_mean:.4f}", f"{stats.train_seconds_mean:.1f}")
        _out.print(table)


def register(app: typer.Typer) -> None:
    """Add `switch` to the root app."""
    app.command("switch")(switch_command)


def register_bench(bench_app: typer.Typer) -> None:
    """Add `paper` to the `bench` group."""
    bench_app.command("paper")(bench_paper_command)

