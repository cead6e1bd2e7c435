"""`crossadapt rollout RUN_DIR`: a switch's student rolled out against a real local predictor, no Kubernetes.

    crossadapt switch --config configs/demo.yaml --out runs/demo
    crossadapt rollout runs/demo --config configs/rollout-demo.yaml

Publishes the run's teacher and student into a local store under RUN_DIR/rollout/, starts `crossadapt
serve predictor` on loopback, replays the test split in time order as traffic (labels sent back after
--label-delay-s of traffic time), and steps the student's share through the rollout steps with the
ModelSwitch operator's gate decisions. Writes rollout.json, rollout.png and rollout.md into RUN_DIR
(or --out) and prints the steps. Exit code 0 whether promoted or rolled back (a rollback is a result).

Only typer is imported at module level (`crossadapt --help` stays fast).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer


def rollout_spec(config: Path | None, steps: str | None, min_labels: int | None) -> Any:
    """The ModelSwitch `spec.rollout` from a YAML file (a bare rollout section or a whole ModelSwitch)."""
    import yaml

    from operators.modelswitch.models import RolloutSpec

    raw: dict[str, Any] = {}
    if config is not None:
        loaded = yaml.safe_load(config.read_text()) or {}
        if not isinstance(loaded, dict):
            raise typer.BadParameter(f"{config} must hold a mapping", param_hint="--config")
        raw = loaded.get("spec", loaded).get("rollout", loaded)
    if steps is not None:
        try:
            raw["steps"] = [int(part) for part in steps.split(",") if part.strip()]
        except ValueError:
            raise typer.BadParameter(f"steps must be comma-separated integers, got {steps!r}",
                                     param_hint="--steps") from None
    if min_labels is not None:
        raw.setdefault("gates", {})["minLabels"] = min_labels
    return RolloutSpec.model_validate(raw)


def find_dataset(run_dir: Path, vocab_hash: str) -> Path:
    """The prepared dataset under RUN_DIR/data whose vocabulary is the teacher's."""
    from crossadapt.cli import CliError

    candidates = sorted(p.parent for p in (run_dir / "data").glob("*/dataset.json"))
    for folder in candidates:
        import json

        if json.loads((folder / "dataset.json").read_text()).get("vocab_hash") == vocab_hash:
            return folder
    raise CliError(f"no prepared dataset with the teacher's vocabulary under {run_dir / 'data'} "
                   f"({len(candidates)} looked at); name it with --data")


def rollout_command(
    run_dir: Annotated[Path, typer.Argument(help="A `crossadapt switch` output folder (teacher/, student/, data/).")],
    config: Annotated[Optional[Path], typer.Option(
        help="YAML with the rollout section of a ModelSwitch (steps, gates, timeouts, cohortKey).")] = None,
    teacher: Annotated[Optional[Path], typer.Option(help="Teacher checkpoint folder [RUN_DIR/teacher].")] = None,
    student: Annotated[Optional[Path], typer.Option(help="Student checkpoint folder [RUN_DIR/student].")] = None,
    data: Annotated[Optional[Path], typer.Option(help="Prepared dataset [the one under RUN_DIR/data].")] = None,
    split: Annotated[str, typer.Option(help="The split replayed as traffic.")] = "test",
    steps: Annotated[Optional[str], typer.Option(
        help="Student shares in %, e.g. 10,50,100 (overrides --config).")] = None,
    min_labels: Annotated[Optional[int], typer.Option(min=1, help="Gate minLabels (overrides --config).")] = None,
    label_delay_s: Annotated[float, typer.Option(
        min=0, help="Seconds of traffic time before a label comes back.")] = 1800.0,
    batch_rows: Annotated[int, typer.Option(min=1, max=4096, help="Rows per inference request.")] = 256,
    max_rows: Annotated[Optional[int], typer.Option(min=1, help="Replay at most this many rows.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Where rollout.json/.png/.md go [RUN_DIR].")] = None,
) -> None:
    """Roll a switch's student out against a local predictor with the operator's gates (replayed test split)."""
    from crossadapt.checkpoint import read_manifest
    from crossadapt.cli import CliError
    from crossadapt.data.prepared import PreparedDataset

    spec = rollout_spec(config, steps, min_labels)
    teacher_dir, student_dir = teacher or run_dir / "teacher", student or run_dir / "student"
    for role, folder in (("teacher", teacher_dir), ("student", student_dir)):
        if not (folder / "manifest.json").is_file():
            raise CliError(f"no {role} checkpoint at {folder} (a `crossadapt switch` output has one)")
    vocab_hash = read_manifest(teacher_dir).vocab_hash
    dataset = PreparedDataset.open(data or find_dataset(run_dir, vocab_hash))
    if split not in dataset.split_names:
        raise CliError(f"no split {split!r} in {dataset.path}; splits: {dataset.split_names}")
    result = local_rollout(dataset, teacher_dir, student_dir, spec, workdir=(out or run_dir) / "rollout",
                           split=split, label_delay_s=label_delay_s, batch_rows=batch_rows, max_rows=max_rows,
                           name=run_dir.resolve().name)
    from operators.local_rollout.report import print_rollout, write_rollout_report

    print_rollout(result)
    paths = write_rollout_report(result, out or run_dir)
    typer.echo(f"wrote {paths['json']}, {paths['png']}, {paths['md']}")


def local_rollout(dataset: Any, teacher_dir: Path, student_dir: Path, spec: Any, *, workdir: Path,
                  split: str = "test", label_delay_s: float = 1800.0, batch_rows: int = 256,
                  max_rows: int | None = None, name: str = "local", bootstrap_replicates: int = 200) -> Any:
    """Publish, start the predictor, replay and decide; returns the `RolloutResult` (predictor stopped)."""
    import shutil

    from operators.local_rollout.predictor import MODEL_NAME, LocalPredictor, publish_for_replay
    from operators.local_rollout.rollout import ReplayClients, run_rollout
    from operators.local_rollout.traffic import ReplayTraffic, log_transformed
    from operators.modelswitch.builders import split_salt
    from operators.modelswitch.clients import Channels, CheckpointRef, GrpcPredictor

    traffic = ReplayTraffic(dataset, split, cohort_key=spec.cohort_key, batch_rows=batch_rows,
                            label_delay_s=label_delay_s, max_rows=max_rows)
    shutil.rmtree(workdir / "store", ignore_errors=True)  # a fresh store: versions start at v000001
    pair = publish_for_replay(workdir / "store", teacher_dir, student_dir, dataset.vocabulary,
                              log_transformed(dataset))
    salt = split_salt("local", name, "")
    with LocalPredictor(pair, workdir, cohort_key=spec.cohort_key, salt=salt,
                        bootstrap_replicates=bootstrap_replicates) as predictor:
        channels = Channels()
        admin = GrpcPredictor(predictor.admin, timeout_s=60.0, channels=channels)
        clients = ReplayClients(predictor.inference, predictor.http, MODEL_NAME)
        try:
            return run_rollout(traffic, admin, clients, spec, teacher=CheckpointRef(*pair.teacher.rsplit("/", 1)),
                               student=CheckpointRef(*pair.student.rsplit("/", 1)), name=name)
        finally:
            clients.close()
            channels.close()


def register(root: typer.Typer) -> None:
    """Mount `crossadapt rollout` on the root CLI."""
    root.command("rollout")(rollout_command)
