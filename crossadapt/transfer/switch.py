"""`run_switch`: the whole model switch on one machine, as `crossadapt switch --config FILE` runs it.

Stages (paper Algorithm 1, plus what production needs around it)::

    data (prepared folder, or synthetic → prepared)      out/data/<preset>-<rows>-s<seed>/
    teacher (checkpoint, or trained on hist ∪ train)     out/teacher/   (reused if config and vocabulary match)
    CrossAdapt: projection → strategic sample → progressive distillation → drift → co-distillation
    baselines (default Scratch) on the same splits
    evaluation on the test split
    student checkpoint (manifest.parent = the teacher)   out/student/
    report.md, results.json, metrics.png, convergence.png, drift.png

Example::

    config = load_switch_config(Path("configs/demo.yaml"))
    results = run_switch(config, Path("runs/demo"))
    print(results.student.auc, results.teacher.auc)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from crossadapt.transfer.experiments.methods import (
    EVAL_BATCH_ROWS,
    MethodContext,
    MethodOutcome,
    run_crossadapt,
    run_method,
)
from crossadapt.transfer.experiments.paired import bootstrap_aucs, percentile_interval
from crossadapt.transfer.experiments.report import write_switch_report
from crossadapt.transfer.experiments.results import (
    OnlineSummary,
    OperationTiming,
    PromotionVerdict,
    Score,
    SwitchResults,
)
from crossadapt.transfer.optim_fit import OptimChoice
from crossadapt.transfer.switch_config import (
    ConfigError,
    OptimSection,
    SwitchConfig,
    TeacherTraining,
    load_switch_config,
    parse_switch_config,
)

if TYPE_CHECKING:
    from crossadapt.data.prepared import PreparedDataset

__all__ = ["SwitchConfig", "ConfigError", "load_switch_config", "parse_switch_config", "run_switch",
           "begin_switch", "finish_switch", "SwitchRun", "prepare_synthetic", "obtain_teacher", "model_label", "fit_optim"]

Log = Callable[[str], None]


def model_label(config: Any) -> str:
    """`mlp-8`, `fibinet-16`: architecture and embedding width, as the paper names its models."""
    return f"{config.architecture}-{config.embedding_dim}"


def prepare_synthetic(preset: str, rows: int, seed: int, root: Path, log: Log = lambda _: None,
                      split: tuple[float, float, float, float] | None = None) -> "PreparedDataset":
    """Generate and prepare a synthetic dataset under `root`, or open the one a previous run left there.

    `split`: hist : train : online : test instead of the preset's own, its periods moved with it
    (`crossadapt.data.synthetic_config.split_periods`; `long_history` only)."""
    from crossadapt.data.prepare import default_config, prepare_dataset
    from crossadapt.data.prepared import PreparedDataset
    from crossadapt.data.synthetic_config import preset_split, split_periods, synthetic_preset

    suffix = "" if split is None else "-split" + "-".join(f"{part:g}" for part in split)
    folder = root / f"{preset}-{rows}-s{seed}{suffix}"
    if (folder / "dataset.json").is_file():
        return PreparedDataset.open(folder)
    log(f"generating synthetic '{preset}' data: {rows} rows → {folder}")
    periods = {} if split is None else split_periods(preset, split)
    source = synthetic_preset(preset, rows=rows, seed=seed, **periods)
    config = default_config(source, None).model_copy(update={"split": split or preset_split(preset)})
    return prepare_dataset(source, folder, config=config, overwrite=True)


def _teacher_matches(folder: Path, config: Any, vocab_hash: str, extra: dict[str, Any]) -> bool:
    from crossadapt.checkpoint import CheckpointError, read_manifest

    if not (folder / "manifest.json").is_file():
        return False
    try:
        manifest = read_manifest(folder)
    except CheckpointError:
        return False
    wanted = config.model_dump(mode="json")
    return (manifest.config == wanted and manifest.vocab_hash == vocab_hash
            and all(manifest.extra.get(k) == v for k, v in extra.items()))


def obtain_teacher(
    dataset: "PreparedDataset",
    training: TeacherTraining,
    folder: Path,
    *,
    seed: int,
    batch_size: int = 4096,
    embedding_lr: float = 0.1,
    dense_lr: float = 1e-3,
    device: str = "cpu",
    threads: int | None = None,
    target: str = "click",
    log: Log = lambda _: None,
) -> tuple[nn.Module, float]:
    """Train the teacher on hist ∪ train and save it at `folder`, or load it if an identical one is there.

    Returns (model, training seconds; 0.0 when loaded from the cache).
    """
    from crossadapt.checkpoint import load_checkpoint, save_checkpoint
    from crossadapt.training import TrainConfig, train_teacher

    extra = {"seed": seed, "epochs": training.epochs, "batch_size": batch_size, "role": "teacher"}
    if target != "click":  # a pCVR teacher is another model (click teachers keep their cache key)
        extra["target"] = target
    if _teacher_matches(folder, training.model, dataset.vocab_hash, extra):
        log(f"reusing teacher {model_label(training.model)} at {folder}")
        return load_checkpoint(folder, device, expected_vocab_hash=dataset.vocab_hash).model, 0.0
    log(f"training teacher {model_label(training.model)} on hist ∪ train ({training.epochs} epoch(s))")
    train_config = TrainConfig(
        epochs=training.epochs, batch_size=batch_size, embedding_lr=embedding_lr, dense_lr=dense_lr, seed=seed,
        device=device, num_threads=threads, progress=False, patience=None, restore_best=False, target=target,
    )
    started = time.perf_counter()
    result = train_teacher(dataset, training.model, train_config)
    seconds = time.perf_counter() - started
    save_checkpoint(folder, result.model, feature_spec=dataset.feature_spec, vocab_hash=dataset.vocab_hash,
                    metrics={k: v for k, v in result.metrics.items() if isinstance(v, (int, float))},
                    extra=extra | {"train_seconds": round(seconds, 3)}, overwrite=True)
    return result.model, seconds


def _open_dataset(config: SwitchConfig, out_dir: Path, log: Log) -> tuple["PreparedDataset", str]:
    from crossadapt.data.prepared import PreparedDataset

    if config.data.dir is not None:
        return PreparedDataset.open(config.data.dir), str(config.data.dir)
    syn = config.data.synthetic
    assert syn is not None  # the config validator guarantees exactly one source
    dataset = prepare_synthetic(syn.preset, syn.rows, syn.seed, out_dir / "data", log)
    return dataset, f"synthetic:{syn.preset} ({syn.rows} rows, seed {syn.seed})"


def fit_optim(config: SwitchConfig, train_rows: int) -> OptimChoice:
    """The switch's batch and learning rates for a D_train of ``train_rows`` rows (see `optim_fit`).

    The batch is fitted to the rows the student's offline stage trains on per epoch: the strategic sample
    (ratio r of D_train) when sampling is on, else D_train; the online stage then gets at least as many
    steps per row. Every other stage (teacher, baselines) uses the same values, so times compare.
    """
    sampling, ablation = config.offline.sampling, config.ablation
    if ablation.offline_stage and ablation.sampling:
        rows = max(1, round(sampling.ratio * train_rows))
        basis = f"offline sample (r = {sampling.ratio:g} of {train_rows} D_train rows)"
    else:
        rows, basis = train_rows, "D_train"
    return config.optim.choose(basis_rows=rows, basis=basis)


def _with_optim(config: SwitchConfig, choice: OptimChoice) -> SwitchConfig:
    """``config`` with its optim's left-out values filled by ``choice`` (what every stage then reads)."""
    values = {"batch_size": choice.batch_size, "embedding_lr": choice.embedding_lr, "dense_lr": choice.dense_lr}
    return config.model_copy(update={"optim": config.optim.model_copy(update=values)})


def _teacher(config: SwitchConfig, dataset: "PreparedDataset", out_dir: Path, log: Log) -> tuple[nn.Module, Path]:
    from crossadapt.checkpoint import load_checkpoint

    if config.teacher.checkpoint is not None:
        path = config.teacher.checkpoint
        log(f"loading teacher checkpoint {path}")
        expected = _teacher_vocab_hash(path, dataset, config)
        return load_checkpoint(path, config.device, expected_vocab_hash=expected).model, path
    assert config.teacher.train is not None
    folder = out_dir / "teacher"
    model, _ = obtain_teacher(
        dataset, config.teacher.train, folder, seed=config.seed, batch_size=config.optim.batch_size,
        embedding_lr=config.optim.embedding_lr, dense_lr=config.optim.dense_lr, device=config.device,
        threads=config.threads, target=config.offline.sampling.target, log=log,
    )
    return model, folder


def _teacher_vocab_hash(path: Path, dataset: "PreparedDataset", config: SwitchConfig) -> str:
    """The vocabulary a teacher checkpoint must name: the dataset's, or with ``online.grow_vocabulary`` any
    older version of it (the student inherits that version's tables; co-distillation grows both)."""
    from crossadapt.checkpoint import read_manifest

    named = read_manifest(path).vocab_hash
    if config.online.grow_vocabulary and named != dataset.vocab_hash and dataset.vocabulary.version_of(named):
        return named
    return dataset.vocab_hash


def _vocabulary_ref(model: nn.Module, dataset: "PreparedDataset") -> tuple[str, int]:
    """(hash, version) of the vocabulary version ``model``'s tables have (a grown or older model's own)."""
    from crossadapt.data.growth import version_for_sizes

    sizes = {field.name: field.vocab_size for field in model.spec.categorical}
    if sizes == {field.name: field.vocab_size for field in dataset.feature_spec.categorical}:
        return dataset.vocab_hash, dataset.manifest.vocab_version
    ref = version_for_sizes(dataset.vocabulary, sizes)
    return ref.hash, ref.version


@dataclass
class _Scored:
    score: Score
    metrics: dict[str, Any]
    labels: np.ndarray  # the scored rows' labels and the model's probabilities (for paired comparisons)
    probabilities: np.ndarray


def _score(name: str, role: str, model: nn.Module, test: Any, seconds: float | None,
           target: str = "click") -> _Scored:
    from crossadapt.training import metrics_from_predictions, predict_proba, select_target_rows, target_labels
    from crossadapt.transfer.experiments.baselines import readable_by  # ids newer than its tables: <UNK>

    rows = select_target_rows(readable_by(model, test), target)  # type: ignore[arg-type]
    labels, probabilities = target_labels(rows, target), predict_proba(model, rows, EVAL_BATCH_ROWS)  # type: ignore[arg-type]
    true_p = None if target != "click" or rows.prob is None else np.asarray(rows.prob)
    metrics = metrics_from_predictions(labels, probabilities, true_probabilities=true_p)
    return _Scored(Score(name=name, role=role, auc=float(metrics["auc"]), logloss=float(metrics["logloss"]),  # type: ignore[arg-type]
                         train_seconds=seconds), metrics, labels, probabilities)


def promotion_verdict(teacher: _Scored, student: _Scored) -> PromotionVerdict:
    """Promote the student only if its test AUC reaches its teacher's; the paired bootstrap over test rows
    says whether the difference stands out from the test split's noise."""
    rows = bootstrap_aucs(student.labels, student.probabilities) - bootstrap_aucs(teacher.labels,
                                                                                   teacher.probabilities)
    low, high = percentile_interval(100.0 * rows)
    return PromotionVerdict.judge(100.0 * (student.score.auc - teacher.score.auc), (low, high))


@dataclass
class SwitchRun:
    """What every switch path shares before the student is trained: data, splits and the teacher."""

    config: SwitchConfig
    out_dir: Path
    dataset: "PreparedDataset"
    dataset_label: str
    teacher: nn.Module
    teacher_path: Path
    splits: dict[str, Any]
    ctx: MethodContext
    optim: OptimChoice | None = None  # the batch and lrs every stage trains with, and why

    @property
    def student_label(self) -> str:
        return model_label(self.config.student.model)


def begin_switch(config: SwitchConfig, out_dir: Path, *, log: Log = lambda _: None) -> SwitchRun:
    """Data (prepared or synthetic), the teacher (loaded or trained) and the splits a switch runs on."""
    from crossadapt.training import configure_threads, preload_optimizer_runtime

    preload_optimizer_runtime()  # method times compare: none may carry the first optimiser's import
    configure_threads(config.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dataset, dataset_label = _open_dataset(config, out_dir, log)
    splits = {name: dataset.split(name) for name in ("hist", "train", "online", "test") if name in dataset.split_names}
    missing = [name for name in ("train", "online", "test") if name not in splits]
    if missing:
        raise ValueError(f"dataset {dataset.path} lacks split(s) {missing}; a switch needs train, online and test")
    optim = fit_optim(config, len(splits["train"]))
    log(f"optim: {optim.reason()}")
    config = _with_optim(config, optim)
    teacher, teacher_path = _teacher(config, dataset, out_dir, log)
    ctx = MethodContext(
        splits=splits, feature_spec=teacher.spec, teacher=teacher, student_config=config.student.model,
        seed=config.seed, offline=config.offline, online=config.online, optim=_concrete(config),
        baseline_epochs=config.baseline_training.epochs, device=config.device, threads=config.threads,
        warm_start=config.warm_start,
    )
    return SwitchRun(config, out_dir, dataset, dataset_label, teacher, Path(teacher_path), splits, ctx, optim)


def _concrete(config: SwitchConfig) -> OptimSection:
    o = config.optim
    assert o.batch_size is not None and o.embedding_lr is not None and o.dense_lr is not None  # _with_optim
    return OptimSection(batch_size=o.batch_size, embedding_lr=o.embedding_lr, dense_lr=o.dense_lr)


def finish_switch(run: SwitchRun, outcome: MethodOutcome, *, log: Log = lambda _: None,
                  operations: list[OperationTiming] | None = None, extra: dict[str, Any] | None = None,
                  platform: str | None = None) -> SwitchResults:
    """Score teacher and student on the test split, save the student, run the baselines, write the report."""
    from crossadapt.checkpoint import save_checkpoint

    config, dataset, out_dir = run.config, run.dataset, run.out_dir
    test = run.splits["test"]
    target = config.offline.sampling.target  # pCVR switches are scored on the clicked rows' conversions
    teacher_scored = _score(f"Teacher ({model_label(run.teacher.config)})", "teacher", run.teacher, test, None,
                            target)
    student_scored = _score(outcome.name, "student", outcome.model, test, outcome.train_seconds, target)
    teacher_score, teacher_metrics = teacher_scored.score, teacher_scored.metrics
    student_score, student_metrics = student_scored.score, student_scored.metrics
    verdict = promotion_verdict(teacher_scored, student_scored)
    log(f"verdict: {verdict.reason}")
    # Published before the baselines run: a failing baseline must not cost the student.
    student_dir = out_dir / "student"
    vocab_hash, vocab_version = _vocabulary_ref(outcome.model, dataset)
    save_checkpoint(
        student_dir, outcome.model, feature_spec=outcome.model.spec, vocab_hash=vocab_hash,
        metrics={k: v for k, v in student_metrics.items() if isinstance(v, (int, float))},
        parent=str(run.teacher_path.resolve()),
        extra={"method": "CrossAdapt", "vocab_version": vocab_version, "ablation": config.ablation.model_dump(),
               "adaptive_kd": config.adaptive_kd.model_dump() if config.adaptive_kd else None,
               "stage_seconds": outcome.stage_seconds,
               "train_seconds": outcome.train_seconds, "details": outcome.details, **(extra or {})},
        overwrite=True,
    )
    baselines, curves = [], [outcome.curve] if outcome.curve else []
    for name in config.baselines:
        log(f"baseline {name}")
        base = run_method(name, run.ctx)  # a baseline, or a comparison method (CrossDomain-WarmStart)
        baselines.append(_score(name, "baseline", base.model, test, base.train_seconds, target).score)
        if base.curve is not None:
            curves.append(base.curve)

    results = SwitchResults(
        teacher=teacher_score, student=student_score, baselines=baselines, curves=curves, drift=outcome.drift,
        online=OnlineSummary.from_details(outcome.details),
        stage_seconds=outcome.stage_seconds, oracle_auc=teacher_metrics.get("oracle_auc"),
        teacher_checkpoint=str(run.teacher_path.resolve()), student_checkpoint=str(student_dir.resolve()),
        dataset=run.dataset_label, ablation=config.ablation.model_dump(), operations=operations or [],
        platform=platform, optim=run.optim, verdict=verdict,
        network_reuse=outcome.details.get("network_reuse"),
    )
    write_switch_report(results, out_dir)
    log(f"report written to {out_dir / 'report.md'}")
    return results


def run_switch(config: SwitchConfig, out_dir: Path, *, log: Log = lambda _: None) -> SwitchResults:
    """Run every stage in this process and write the student checkpoint and the report into `out_dir`."""
    run = begin_switch(config, out_dir, log=log)
    log(f"CrossAdapt: {model_label(run.teacher.config)} → {run.student_label}")
    outcome = run_crossadapt(run.ctx, config.ablation, adaptive=config.adaptive_kd or False,
                             name=f"CrossAdapt ({run.student_label})")
    return finish_switch(run, outcome, log=log)
