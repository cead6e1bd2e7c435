"""``crossadapt train`` (a teacher on hist + train) and ``crossadapt evaluate`` (JSON metrics of a checkpoint).

Heavy imports (torch, models, data) happen inside the commands so ``crossadapt --help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from pydantic import BaseModel, ConfigDict, Field


class RunFile(BaseModel):
    """The ``--config`` file: ``model`` is a model config (``architecture``, ``embedding_dim``, ...),
    ``train`` a TrainConfig. Both optional; command-line flags override them."""

    model_config = ConfigDict(extra="forbid")

    model: dict[str, Any] = Field(default_factory=dict)
    train: dict[str, Any] = Field(default_factory=dict)


def load_run_file(path: Path) -> RunFile:
    """Parse a YAML (``.yaml``/``.yml``) or JSON config file into a :class:`RunFile`."""
    from crossadapt.cli import CliError

    if not path.is_file():
        raise CliError(f"{path}: config file not found")
    text = path.read_text()
    try:
        if path.suffix.lower() in {".yaml", ".yml"}:
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml.YAMLError / JSONDecodeError: both name line and column
        raise CliError(f"{path}: not valid {'YAML' if path.suffix.lower() in {'.yaml', '.yml'} else 'JSON'}: {exc}")
    if not isinstance(data, dict):
        raise CliError(f"{path}: expected a mapping with 'model' and/or 'train', got {type(data).__name__}")
    return RunFile.model_validate(data)


def parse_hidden(text: str) -> list[int]:
    """``"64,32,4"`` -> ``[64, 32, 4]``."""
    from crossadapt.cli import CliError

    try:
        units = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"--hidden must be comma-separated integers like 64,32,4, got {text!r}") from None
    if not units or any(u < 1 for u in units):
        raise CliError(f"--hidden must list positive integers, got {text!r}")
    return units


def _validated(parse, data: dict[str, Any], where: str):
    """``parse(data)``, turning a pydantic error into one line naming the file, section and field."""
    from pydantic import ValidationError

    from crossadapt.cli import CliError

    try:
        return parse(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = list(first["loc"])
        if loc and loc[0] == data.get("architecture"):  # the union's tag, not a key the user wrote
            loc = loc[1:]
        field = ".".join(str(p) for p in loc) or "(section)"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise CliError(f"{where}.{field}: {first['msg']}{more}") from None


def _open_dataset(path: Path):
    from crossadapt.cli import CliError
    from crossadapt.data import PreparedDataset

    if not path.is_dir():
        raise CliError(f"{path}: no such dataset folder (make one with `crossadapt data prepare`)")
    return PreparedDataset.open(path)


def _emit(payload: dict[str, Any]) -> None:
    typer.echo(json.dumps(payload, indent=2, sort_keys=False))


def train_command(
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset folder (from `crossadapt data prepare`).")],
    out: Annotated[Path, typer.Option("--out", help="Checkpoint folder to write (must not exist unless --overwrite).")],
    arch: Annotated[Optional[str], typer.Option("--arch", help="Architecture, see `crossadapt models`.")] = None,
    embedding_dim: Annotated[Optional[int], typer.Option("--embedding-dim", help="Embedding width D (default: the architecture's).")] = None,
    hidden: Annotated[Optional[str], typer.Option("--hidden", help="Hidden units, e.g. 64,32,4.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Training epochs (early stopping may end sooner).")] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Rows per step (default 4096).")] = None,
    target: Annotated[Optional[str], typer.Option("--target", help="click (default) or conversion (clicked rows only).")] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Seed of init, shuffling and dropout.")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="CPU threads (default: all available).")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON file with 'model' and 'train' sections.")] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing checkpoint at --out.")] = False,
) -> None:
    """Train a teacher on the dataset's hist + train splits and save it as a checkpoint.

    The latest 10% of train (TrainConfig.validation_fraction) validates for early stopping.
    Prints JSON: the checkpoint path, validation metrics and a fit summary.

    Example: crossadapt train --data data/synth --arch mlp --embedding-dim 8 --hidden 64,32,4 --out runs/teacher
    """
    from crossadapt.cli import CliError

    run_file = load_run_file(config) if config is not None else RunFile()
    model_dict = dict(run_file.model)
    overrides = {"architecture": arch, "embedding_dim": embedding_dim,
                 "hidden_units": parse_hidden(hidden) if hidden is not None else None}
    model_dict.update({k: v for k, v in overrides.items() if v is not None})
    if "architecture" not in model_dict:
        raise CliError("no architecture: pass --arch NAME (see `crossadapt models`) or set model.architecture in --config")
    train_dict = dict(run_file.train)
    train_overrides = {"epochs": epochs, "batch_size": batch_size, "target": target, "seed": seed, "num_threads": threads}
    train_dict.update({k: v for k, v in train_overrides.items() if v is not None})
    if out.exists() and not overwrite:
        raise CliError(f"{out}: exists already (pass --overwrite to replace it)")

    from crossadapt.checkpoint import save_checkpoint
    from crossadapt.models import list_models, parse_model_config
    from crossadapt.training import TrainConfig, train_teacher

    if model_dict["architecture"] not in list_models():
        raise CliError(f"unknown architecture {model_dict['architecture']!r}; choose one of {', '.join(list_models())}")
    source = str(config) if config is not None else "command line"
    model_config = _validated(parse_model_config, model_dict, f"{source}: model")
    train_config = _validated(TrainConfig.model_validate, train_dict, f"{source}: train")
    dataset = _open_dataset(data)
    result = train_teacher(dataset, model_config, train_config)
    fit = {"steps": result.fit.steps, "epochs_run": result.fit.epochs_run, "stopped_early": result.fit.stopped_early,
           "best_epoch": result.fit.best_epoch, "best_step": result.fit.best_step,
           "seconds": round(result.fit.seconds, 3), "train_rows": result.train_rows, "valid_rows": result.valid_rows}
    save_checkpoint(
        out, result.model, feature_spec=dataset.feature_spec, vocab_hash=dataset.vocab_hash,
        metrics=result.metrics, overwrite=overwrite,
        extra={"role": "teacher", "dataset": str(data.resolve()), "trained_on": ["hist", "train"],
               "target": train_config.target, "train_config": train_config.model_dump(mode="json"), "fit": fit},
    )
    _emit({"checkpoint": str(out), "architecture": model_config.architecture, "validation": result.metrics, "fit": fit})


def evaluate_command(
    model: Annotated[Path, typer.Option("--model", help="Checkpoint folder (from `crossadapt train`).")],
    data: Annotated[Path, typer.Option("--data", help="Prepared dataset folder with the same vocabulary.")],
    split: Annotated[str, typer.Option("--split", help="hist, train, online or test.")] = "test",
    target: Annotated[Optional[str], typer.Option("--target", help="click or conversion (default: the checkpoint's).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Rows per forward pass.")] = 65536,
) -> None:
    """Score a checkpoint on one split; prints JSON: auc, logloss, pcoc, gauc (with users), oracle_auc (synthetic) ...

    Refuses a dataset whose vocabulary differs from the checkpoint's (ids would mean other values).
    """
    from crossadapt.checkpoint import load_checkpoint
    from crossadapt.cli import CliError
    from crossadapt.training import evaluate_model

    dataset = _open_dataset(data)
    splits = dict(dataset.manifest.splits)
    if split not in splits:
        raise CliError(f"dataset {data} has no split {split!r}; it has {', '.join(splits)}")
    loaded = load_checkpoint(model, expected_vocab_hash=dataset.vocab_hash)
    chosen = target or loaded.manifest.extra.get("target", "click")
    if chosen not in ("click", "conversion"):
        raise CliError(f"--target must be click or conversion, got {chosen!r}")
    metrics = evaluate_model(loaded.model, dataset.split(split), target=chosen, batch_size=batch_size)
    _emit({"checkpoint": str(model), "architecture": loaded.manifest.architecture, "split": split, "target": chosen,
           **metrics})


def register(app: typer.Typer) -> None:
    app.command("train", no_args_is_help=True)(train_command)
    app.command("evaluate", no_args_is_help=True)(evaluate_command)
