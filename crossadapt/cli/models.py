"""``crossadapt models ...``: the CTR architectures this build can train, and their config defaults."""

from __future__ import annotations

import json

import typer

from crossadapt.models.config import architecture_names, paper_student_config, paper_teacher_config, parse_model_config

app = typer.Typer(
    help=(
        "CTR model architectures. With no subcommand: print the registered names, one per line. "
        "`crossadapt models show fibinet` prints that architecture's default config (JSON) to copy into a "
        "train or switch config; `--paper teacher|student` prints the CrossAdapt paper's settings."
    ),
    invoke_without_command=True,
)


def list_models_command() -> None:
    """Print one registered architecture name per line."""
    from crossadapt.models.registry import list_models  # the model zoo (torch) loads only for this command

    for name in list_models():
        typer.echo(name)


@app.callback()
def _default(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand is None:
        list_models_command()


@app.command("list")
def list_command() -> None:
    """Print the registered architecture names, one per line."""
    list_models_command()


@app.command("show")
def show_command(
    architecture: str | None = typer.Argument(None, help=f"One of: {', '.join(architecture_names())}."),
    paper: str | None = typer.Option(None, "--paper", help="teacher (MLP-8) or student (FiBiNET-16) from the paper."),
) -> None:
    """Print a config as JSON: an architecture's defaults, or one of the paper's example configs."""
    if (architecture is None) == (paper is None):
        raise typer.BadParameter("give an ARCHITECTURE or --paper teacher|student (exactly one)")
    if paper is not None:
        examples = {"teacher": paper_teacher_config, "student": paper_student_config}
        if paper not in examples:
            raise typer.BadParameter(f"--paper must be 'teacher' or 'student', got {paper!r}")
        config = examples[paper]()
    else:
        if architecture not in architecture_names():
            raise typer.BadParameter(
                f"unknown architecture {architecture!r}; choose from {', '.join(architecture_names())}")
        config = parse_model_config({"architecture": architecture})
    typer.echo(json.dumps(config.model_dump(mode="json"), indent=2))
