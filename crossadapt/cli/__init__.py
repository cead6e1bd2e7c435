"""The ``crossadapt`` command line.

Every area keeps its commands in ``crossadapt/cli/<area>.py``; this file only mounts them. A module
mounts itself through whichever of these it defines:

- ``register(app)``: adds root-level commands (``crossadapt train``, ``crossadapt switch`` ...);
- ``register_bench(bench_app)``: adds commands under ``crossadapt bench``;
- ``app`` (a ``typer.Typer``), used only when there is no ``register``: mounted as a command group
  ``crossadapt <name> ...``.

Adding an area is one line in :data:`CLI_MODULES`. Packages outside the core (the platform's
``serve``, ``worker``, ``up``; the operator) plug in the same way through the ``crossadapt.cli``
entry-point group, so the core never imports them. A module that fails to import does not break the
others: its command stays listed and explains the import error (exit code 2).

Errors a user can fix (missing files, bad configs, corrupt checkpoints) print one red line on stderr
and exit with code 2; set ``CROSSADAPT_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence

import typer

#: command/group name -> module (the order is the order of ``crossadapt --help``).
CLI_MODULES: dict[str, str] = {
    "data": "crossadapt.cli.data",
    "models": "crossadapt.cli.models",
    "train": "crossadapt.cli.train",
    "switch": "crossadapt.cli.switch",
    "bench": "crossadapt.cli.bench",
}

app = typer.Typer(
    name="crossadapt",
    help=(
        "CrossAdapt: switch a production CTR model (teacher) to a new architecture (student).\n\n"
        "Typical start: `crossadapt data prepare ...` (make a dataset folder), "
        "`crossadapt train --data DIR --arch mlp --embedding-dim 8 --out CKPT`, "
        "`crossadapt evaluate --model CKPT --data DIR`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _add_unavailable(root: typer.Typer, name: str, module: str, error: BaseException) -> None:
    """Keep ``crossadapt <name>`` listed; running it (with any arguments) explains the import error."""

    def explain() -> None:
        raise CliError(f"`crossadapt {name}` is unavailable: importing {module} failed: {error}")

    root.command(name, help=f"(unavailable: {module} failed to import)", add_help_option=False,
                 context_settings={"ignore_unknown_options": True, "allow_extra_args": True})(explain)


PLUGIN_GROUP = "crossadapt.cli"


def plugin_modules() -> dict[str, str]:
    """CLI modules that installed packages register under the ``crossadapt.cli`` entry-point group."""
    from importlib.metadata import entry_points

    return {entry.name: entry.value for entry in entry_points(group=PLUGIN_GROUP)}


def mount_all(root: typer.Typer, modules: dict[str, str] | None = None) -> None:
    """Import each CLI module (core, then plugins) and let it register itself on ``root`` and the bench group."""
    from crossadapt.cli import bench as bench_cli

    if modules is None:
        core = dict(CLI_MODULES)
        bench_module = core.pop("bench")  # `bench` last, so plugins' bench commands list under it
        modules = {**core, **plugin_modules(), "bench": bench_module}
    loaded = []
    for name, module_name in modules.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            _add_unavailable(root, name, module_name, exc)
            continue
        loaded.append((name, module))
    for name, module in loaded:
        if hasattr(module, "register"):
            module.register(root)
        elif isinstance(getattr(module, "app", None), typer.Typer):
            root.add_typer(module.app, name=name)
        if module is not bench_cli and hasattr(module, "register_bench"):
            module.register_bench(bench_cli.app)


class CliError(Exception):
    """A problem the user can fix; shown as one line, exit code 2."""


def _one_line(exc: BaseException) -> str:
    """A short, single-line description of a user-facing error."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        errors = exc.errors()
        first = errors[0]
        where = ".".join(str(p) for p in first["loc"]) or exc.title
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return f"invalid {exc.title}: {where}: {first['msg']}{more}"
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(exc).__name__


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user fixes by changing input or settings (evaluated only once something was raised)."""
    from pydantic import ValidationError

    kinds: list[type[BaseException]] = [CliError, ValidationError, OSError, ValueError, KeyError]
    try:  # torch-backed; an image without torch (the operator's) must still report its own errors
        from crossadapt.checkpoint import CheckpointError
        from crossadapt.training.trainer import TrainingDivergedError
    except ImportError:
        return tuple(kinds)
    return (*kinds, CheckpointError, TrainingDivergedError)


def _is_user_error(exc: BaseException) -> bool:
    """A core user error, or a plugin's error whose class says ``user_facing = True`` (the core CLI
    cannot import plugins' error types, so it asks the class)."""
    return isinstance(exc, _user_errors()) or bool(getattr(type(exc), "user_facing", False))


def _usage_errors() -> tuple[type[BaseException], ...]:
    """Usage-error classes (unknown option, missing value ...): typer >= 0.20 vendors its own click,
    whose errors derive from ``typer.TyperException``; older typer raises click's own."""
    kinds: list[type[BaseException]] = []
    if hasattr(typer, "TyperException"):
        kinds.append(typer.TyperException)
    try:
        import click

        kinds.append(click.ClickException)
    except ImportError:
        pass
    return tuple(kinds)


def run(argv: Sequence[str] | None = None) -> int:
    """Run the CLI on ``argv`` (default: ``sys.argv[1:]``) and return the exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        result = app(args=args, prog_name="crossadapt", standalone_mode=False)
    except _usage_errors() as exc:  # usage errors: unknown option, missing argument ...
        if hasattr(exc, "show"):
            exc.show()
        else:
            typer.secho(f"error: {_one_line(exc)}", fg=typer.colors.RED, err=True)
        return int(getattr(exc, "exit_code", 2))
    except typer.Abort:
        typer.secho("aborted", fg=typer.colors.RED, err=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - anything not a user error is re-raised below
        if not _is_user_error(exc) or os.environ.get("CROSSADAPT_DEBUG"):
            raise
        typer.secho(f"error: {_one_line(exc)}", fg=typer.colors.RED, err=True)
        return 2
    return result if isinstance(result, int) else 0


def main() -> None:
    """Console-script entry point (``crossadapt``)."""
    sys.exit(run())


mount_all(app)
