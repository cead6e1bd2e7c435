"""The method registry: every method of the paper's Table 1 as `run(ctx) -> MethodOutcome`, plus the ablations.

CrossAdapt itself is one pipeline (:func:`run_crossadapt`) wired from the transfer modules:
projection (and, for a student of the teacher's own network, that network: :mod:`crossadapt.transfer.network_reuse`)
→ strategic sample → progressive offline distillation → drift → asymmetric online co-distillation with replay.
`CrossAdapt-Full` skips the sample, `CrossAdapt-Adaptive` adds the gap-driven λ of
:mod:`crossadapt.transfer.offline.adaptive`, `CrossAdapt-Collaborative` lets the teacher also learn from
the student online (:mod:`crossadapt.transfer.online.collaborative`; the preset's `online.collaborative`,
else its defaults), `CrossDomain-WarmStart` starts the student from a source domain (`hist`) by the three
levels of :mod:`crossadapt.transfer.warm_start` and trains it as Scratch, and every Table 2 ablation is an
:class:`AblationSection` switch. Baselines come from :mod:`crossadapt.transfer.experiments.baselines`.

`train_seconds` is the student's training wall time: projection, sampling, teacher-logit caching,
offline distillation, drift measurement and the online stream (its prequential scoring is part of
online learning); the final test evaluation is not included.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import nn

from crossadapt.transfer.experiments.results import Curve, DriftSummary
from crossadapt.transfer.network_reuse import reuse_teacher_network
from crossadapt.transfer.online.collaborative import CollaborativeConfig
from crossadapt.transfer.switch_config import AblationSection, OfflineSection, OnlineSection, OptimSection

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays
    from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
    from crossadapt.transfer.warm_start import WarmStartConfig
    from crossadapt.models.config import ModelConfig
    from crossadapt.models.spec import FeatureSpec

CROSSADAPT_METHODS = ("CrossAdapt-Full", "CrossAdapt-Sample", "CrossAdapt-Adaptive", "CrossAdapt-Collaborative")
#: The related papers' methods (issue 15): registered beside the paper's Table 1 methods, but the Table 1
#: presets leave them out (they run where a preset names them).
RELATED_PAPER_METHODS = ("CrossAdapt-Collaborative", "CrossDomain-WarmStart")
#: Methods that never read the teacher: their result depends on the student and the seed only.
TEACHER_FREE_METHODS = ("Scratch", "Scratch-Online", "Full-Retrain", "CrossDomain-WarmStart")

#: Table 2 rows: each switches off one component of CrossAdapt-Sample. "w/o offline stage" starts the
#: online stage from a random student (no projection, sample or offline distillation); "w/o projection"
#: has no frozen phase either (nothing projected to keep fixed), so it trains everything for the same
#: epochs; "w/o online stage" evaluates the student right after offline distillation; "w/o adaptive
#: replay" streams with r_enh = 0; "w/o co-evolution" freezes the teacher online; "w/o asymmetry" steps
#: it every batch (τ = 1).
ABLATIONS: dict[str, tuple[str, dict[str, bool]]] = {
    "w/o projection": ("offline", {"projection": False}),
    "w/o progressive": ("offline", {"progressive": False}),
    "w/o sampling": ("offline", {"sampling": False}),
    "w/o offline stage": ("offline", {"offline_stage": False}),
    "w/o co-evolution": ("online", {"co_evolution": False}),
    "w/o asymmetry": ("online", {"asymmetry": False}),
    "w/o adaptive replay": ("online", {"adaptive_replay": False}),
    "w/o online stage": ("online", {"online_stage": False}),
}


@dataclass
class MethodContext:
    """What every method of one (dataset, teacher→student pair, seed) shares.

    `splits` holds `train`, `online`, `test` and `hist` (only Full-Retrain reads hist). `teacher` is the
    trained production teacher; methods that train a teacher work on a deep copy, so it stays as given.
    """

    splits: dict[str, "SplitArrays"]
    feature_spec: "FeatureSpec"
    teacher: nn.Module
    student_config: "ModelConfig"
    seed: int = 0
    offline: OfflineSection = field(default_factory=OfflineSection)
    online: OnlineSection = field(default_factory=OnlineSection)
    optim: OptimSection = field(default_factory=OptimSection)
    baseline_epochs: int = 1
    device: str = "cpu"
    threads: int | None = None
    #: CrossDomain-WarmStart's levels and source models (None: their defaults); the source domain is `hist`.
    warm_start: "WarmStartConfig | None" = None


@dataclass
class MethodOutcome:
    """A trained student and how it got there. `curve` seconds count from the start of its training."""

    name: str
    model: nn.Module
    train_seconds: float
    curve: Curve | None = None
    drift: DriftSummary | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    teacher: nn.Module | None = None  # the co-evolved teacher copy, where one was trained


def _fresh_student(ctx: MethodContext) -> nn.Module:
    """A randomly initialised student, seeded so every method of a seed starts from the same weights."""
    from crossadapt.models import build_model
    from crossadapt.training import positive_rate, seed_everything

    seed_everything(ctx.seed)
    base_rate = positive_rate(ctx.splits["train"])
    return build_model(ctx.student_config, ctx.feature_spec, base_rate=base_rate).to(ctx.device)


#: Rows per inference forward. FiBiNET on Criteo-shaped data (39 fields) holds a [B, 2·741·16] float
#: activation: 0.8 GB at 8192 rows, 6 GB at the library default of 65536.
EVAL_BATCH_ROWS = 8192

#: Prequential windows per online stream (convergence plot points), each of at least MIN_WINDOW_ROWS
#: rows so that a window's AUC is not mostly noise.
CURVE_POINTS = 20
MIN_WINDOW_ROWS = 2000


def window_batches(ctx: MethodContext) -> int:
    """Batches per prequential window: about CURVE_POINTS windows over the online split, each ≥ MIN_WINDOW_ROWS rows."""
    batch = ctx.optim.batch_size
    batches = -(-len(ctx.splits["online"]) // batch)
    return max(1, batches // CURVE_POINTS, -(-MIN_WINDOW_ROWS // batch))


def _curve(name: str, result: Any, offset: float) -> Curve | None:
    if result is None:
        return None
    seconds, auc = result.curve("student")
    return Curve(name=name, seconds=[offset + s for s in seconds], auc=list(auc)) if seconds else None


def _drift_summary(controller: Any, config: OnlineSection) -> DriftSummary:
    report = controller.initial_report
    return DriftSummary(
        metric=report.metric,
        shift=report.shift,
        replay_ratio=controller.ratio,
        theta_low=config.drift.theta_low,
        theta_high=config.drift.theta_high,
        per_feature={entry.name: entry.mean for entry in report.per_feature},
    )


def prior_shift(sample_rate: float | None, data_rate: float | None) -> float:
    """``logit(sample_rate) - logit(data_rate)``: the BCE logit shift that makes a resampled set's labels
    consistent with a model calibrated on the full data (0 where either rate is undefined)."""
    from crossadapt.metrics import log_odds

    if sample_rate is None or data_rate is None or not (0 < sample_rate < 1 and 0 < data_rate < 1):
        return 0.0
    return log_odds(sample_rate) - log_odds(data_rate)


def _measure_replay(ctx: MethodContext, train: "SplitArrays", *, replay: bool) -> Any:
    """Δ_shift of D_train (Eq. 13) and a ReplayController at r_enh (Eq. 14; k = 0 switches replay off)."""
    from crossadapt.transfer.drift.detector import DriftConfig
    from crossadapt.transfer.online.replay import ReplayConfig, ReplayController

    drift = ctx.online.drift
    config = ReplayConfig(
        theta_low=drift.theta_low,
        theta_high=drift.theta_high,
        max_ratio=drift.max_replay if replay else 0.0,
        drift=DriftConfig(metric=drift.metric, windows=drift.windows, bins=drift.bins),
        # Beyond the paper (off by default): re-estimate Δ_shift from the stream as it arrives.
        rolling=drift.rolling,
        window_rows=drift.window_rows,
    )
    spec = ctx.feature_spec
    names = [f.name for f in spec.categorical] + list(spec.numerical)
    return ReplayController.from_training_pool(
        config,
        train.categorical if train.num_categorical else None,
        train.numerical if train.num_numerical else None,
        seed=ctx.seed,
        feature_names=names,
        vocab_sizes=[f.vocab_size for f in spec.categorical],
    )


class _StageClock:
    """Wall seconds per stage of one run, from the start of the student's training."""

    def __init__(self) -> None:
        self.started = self.mark = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, label: str) -> None:
        now = time.perf_counter()
        self.seconds[label] = self.seconds.get(label, 0.0) + now - self.mark
        self.mark = now

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def run_crossadapt(
    ctx: MethodContext,
    ablation: AblationSection | None = None,
    *,
    adaptive: "bool | AdaptiveKDConfig" = False,
    collaborative: "CollaborativeConfig | None" = None,
    name: str = "CrossAdapt",
) -> MethodOutcome:
    """The CrossAdapt pipeline (Algorithm 1) on `ctx`, with components switched off by `ablation`.

    `adaptive`: False for the paper's fixed λ; True or an :class:`AdaptiveKDConfig` for the gap-driven λ.
    `collaborative`: the teacher's KD term toward the student online; None takes `ctx.online.collaborative`
    (None there too: the paper's teacher, which learns from the labels only).
    """
    from crossadapt.training import configure_threads
    from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig

    ablation = ablation or AblationSection()
    configure_threads(ctx.threads)
    train = ctx.splits["train"]
    student = _fresh_student(ctx)
    teacher = copy.deepcopy(ctx.teacher).to(ctx.device)  # co-evolution trains it; the caller's stays as given
    adaptive_config = adaptive if isinstance(adaptive, AdaptiveKDConfig) else AdaptiveKDConfig() if adaptive else None
    details: dict[str, Any] = {"ablation": ablation.model_dump()}
    clock = _StageClock()

    optimizer_state = None
    if ablation.offline_stage:
        if ablation.projection:  # Alg. 1 lines 2-9: the teacher's tables, projected to the student's width
            details["projection"] = _project_embeddings(ctx, teacher, student)
            if ctx.offline.reuse_teacher_network:  # beyond the paper: a student of the teacher's own network
                details["network_reuse"] = reuse_teacher_network(teacher, student).model_dump()
            clock.lap("projection")
        offline_rows, task_logit_shift = train, 0.0
        if ablation.sampling:  # lines 10-15: D'_train, class-balanced per temporal block (and Eq. 9 for pCVR)
            offline_rows, task_logit_shift = _strategic_sample(ctx, teacher, details)
            clock.lap("sampling")
        # lines 16-26: phase 1 with the embeddings frozen, phase 2 joint
        student, optimizer_state = _distill_offline(ctx, teacher, student, offline_rows, task_logit_shift,
                                                    ablation, adaptive_config, details)
        clock.lap("offline_distillation")

    curve = drift = None
    if ablation.online_stage:
        # lines 28-35 (Eq. 13-14): Δ_shift of D_train → r_aug
        controller = _measure_replay(ctx, train, replay=ablation.adaptive_replay)
        drift = _drift_summary(controller, ctx.online)
        clock.lap("drift")
        online_offset = clock.elapsed  # the curve's seconds count from the start of the student's training
        # lines 36-50: the student steps every batch, the teacher every τ, replay mixed into each batch
        result = _codistill_online(ctx, teacher, student, controller, optimizer_state, ablation, adaptive_config,
                                   details, collaborative or ctx.online.collaborative)
        curve = _curve(name, result, offset=online_offset)
        student = result.student
        clock.lap("online_codistillation")
    return MethodOutcome(
        name=name, model=student, train_seconds=clock.elapsed, curve=curve, drift=drift,
        stage_seconds=clock.seconds, details=details, teacher=teacher,
    )


def _project_embeddings(ctx: MethodContext, teacher: nn.Module, student: nn.Module) -> dict[str, str]:
    """Copy, QR or PCA per table (paper §3.1); returns the kind each table got."""
    from crossadapt.transfer.projection import project_model_embeddings

    reports = project_model_embeddings(teacher, student, seed=ctx.seed)
    return {table: report.kind for table, report in reports.items()}


def _strategic_sample(ctx: MethodContext, teacher: nn.Module, details: dict[str, Any]) -> "tuple[SplitArrays, float]":
    """D'_train (Eq. 7-8) and the logit shift that undoes its class balance (0 unless prior correction)."""
    from crossadapt.training import positive_rate
    from crossadapt.transfer.offline.sampling import SamplingConfig, StrategicSampler

    train, s = ctx.splits["train"], ctx.offline.sampling
    sampler = StrategicSampler(
        SamplingConfig(ratio=s.ratio, positive_ratio=s.positive_ratio, temporal_blocks=s.temporal_blocks,
                       unclicked_ratio=s.unclicked_ratio, seed=ctx.seed)
    )
    if s.target == "conversion":  # pCVR: balance the clicked rows by conversion, then Eq. 9
        sample = sampler.sample(train.conversion, train.timestamp, candidates=np.flatnonzero(train.label > 0.5))
        rows = _pcvr_rows(train, sample, sampler, teacher)
        details["unclicked_rows"] = len(rows) - len(sample.indices)
    else:
        sample = sampler.sample(train.label, train.timestamp)
        rows = train.take(sample.indices)
    details["sample_rows"] = len(rows)
    details["sample_positive_rate"] = sample.report.positive_rate
    shift = 0.0
    if s.prior_correction:
        shift = prior_shift(sample.report.positive_rate, positive_rate(train, s.target))
        details["task_logit_shift"] = shift
    return rows, shift


def _distill_offline(ctx: MethodContext, teacher: nn.Module, student: nn.Module, rows: "SplitArrays",
                     task_logit_shift: float, ablation: AblationSection, adaptive: "AdaptiveKDConfig | None",
                     details: dict[str, Any]) -> tuple[nn.Module, Any]:
    """Progressive distillation on `rows` (Eq. 10-12); returns the student and its optimiser state."""
    from crossadapt.transfer.offline.distillation import OfflineDistillConfig, distill_offline

    d = ctx.offline.distillation
    # Phase 1 keeps the *projected* tables fixed while the interaction network adapts to them. Without
    # projection the tables are the student's random init (std 1e-4): freezing those starves a narrow
    # MLP of signal, and its ReLU units die in the first epoch. Hence no frozen phase there.
    progressive = ablation.progressive and ablation.projection
    distilled = distill_offline(
        student,
        rows,
        OfflineDistillConfig(
            frozen_epochs=d.frozen_epochs, joint_epochs=d.joint_epochs, kd_weight=d.kd_weight,
            temperature=d.temperature, progressive=progressive, batch_size=ctx.optim.batch_size,
            embedding_lr=ctx.optim.embedding_lr, dense_lr=ctx.optim.dense_lr, seed=ctx.seed, device=ctx.device,
            num_threads=ctx.threads, adaptive=adaptive, teacher_batch_size=EVAL_BATCH_ROWS,
            eval_batch_size=EVAL_BATCH_ROWS, task_logit_shift=task_logit_shift, kd_gate=d.kd_gate,
            target=ctx.offline.sampling.target,
        ),
        teacher=teacher,
        # Adaptive λ offline compares student and teacher on the most recent training rows.
        valid=ctx.splits["train"] if adaptive is not None else None,
    )
    details["offline_rows"] = distilled.rows
    details["offline_phases"] = [phase.name for phase in distilled.phases]
    return distilled.student, distilled.optimizer_state


def _codistill_online(ctx: MethodContext, teacher: nn.Module, student: nn.Module, controller: Any,
                      optimizer_state: Any, ablation: AblationSection, adaptive: "AdaptiveKDConfig | None",
                      details: dict[str, Any], collaborative: "CollaborativeConfig | None" = None) -> Any:
    """Asymmetric co-distillation over the online split (Eq. 15-16) with drift-sized replay from D_train."""
    from crossadapt.transfer.online.codistillation import OnlineCoDistillConfig, codistill_online

    o, d, train = ctx.online, ctx.offline.distillation, ctx.splits["train"]
    result = codistill_online(
        teacher,
        student,
        ctx.splits["online"],
        OnlineCoDistillConfig(
            batch_size=ctx.optim.batch_size, kd_weight=d.kd_weight, temperature=d.temperature, kd_gate=d.kd_gate,
            teacher_update_interval=o.teacher_update_interval, co_evolution=ablation.co_evolution,
            asymmetric=ablation.asymmetry, teacher_dense_lr=o.teacher_lr, embedding_lr=ctx.optim.embedding_lr,
            teacher_embedding_lr=o.teacher_embedding_lr_for(ctx.optim.embedding_lr),
            dense_lr=ctx.optim.dense_lr, seed=ctx.seed, device=ctx.device, num_threads=ctx.threads,
            adaptive=adaptive, window_batches=window_batches(ctx),
            grow_vocabulary=o.grow_vocabulary, projection_seed=ctx.seed,
            target=ctx.offline.sampling.target, collaborative=collaborative,
        ),
        replay=controller if ablation.adaptive_replay else None,
        replay_pool=train if ablation.adaptive_replay else None,
        student_optimizer_state=optimizer_state,
    )
    details["teacher_updates"] = result.teacher_updates
    details["replay_rows"] = result.replay_rows
    details["online_rows"] = result.rows
    details["vocabulary_sizes"] = {f.name: f.vocab_size for f in result.student.embedding.spec.categorical}
    details["prequential_auc"] = result.student_prequential.get("auc")
    details["prequential_logloss"] = {"student": result.student_prequential.get("logloss"),
                                      "teacher": result.teacher_prequential.get("logloss")}
    if collaborative is not None:
        details["collaboration_share"] = result.collaboration_share  # mean a_i: where the student taught
    if ablation.adaptive_replay and controller is not None and (rolling := controller.rolling_summary()) is not None:
        details["rolling_drift"] = rolling  # the stream's own Δ_shift at its end (online.drift.rolling)
    if adaptive is not None:
        details["online_kd_weight_trace"] = result.kd_weight_trace  # (batch, relative gap, λ)
    return result


def run_baseline_method(ctx: MethodContext, name: str, *, student: nn.Module | None = None) -> MethodOutcome:
    """One of the paper's baselines (Scratch, Scratch-Online, Full-Retrain, Vanilla-KD, Hint-KD, RKD), from a
    fresh student or from ``student`` (a warm start: trained in place by the baseline's recipe)."""
    from crossadapt.training import configure_threads
    from crossadapt.transfer.experiments.baselines import BaselineConfig, run_baseline

    configure_threads(ctx.threads)
    d = ctx.offline.distillation
    config = BaselineConfig(
        offline_epochs=ctx.baseline_epochs, batch_size=ctx.optim.batch_size, embedding_lr=ctx.optim.embedding_lr,
        dense_lr=ctx.optim.dense_lr, kd_weight=d.kd_weight, temperature=d.temperature,
        teacher_dense_lr=ctx.online.teacher_lr,
        teacher_embedding_lr=ctx.online.teacher_embedding_lr_for(ctx.optim.embedding_lr),
        seed=ctx.seed, device=ctx.device, num_threads=ctx.threads, window_batches=window_batches(ctx),
        grow_vocabulary=ctx.online.grow_vocabulary, target=ctx.offline.sampling.target,
    )
    splits = {key: ctx.splits[key] for key in ("hist", "train", "online") if key in ctx.splits}
    student = student if student is not None else _fresh_student(ctx)
    result = run_baseline(name, student=student, splits=splits, teacher=ctx.teacher, config=config)  # type: ignore[arg-type]
    return MethodOutcome(
        name=name, model=result.model, train_seconds=result.seconds,
        curve=_curve(name, result.online, offset=result.offline_seconds),
        stage_seconds={"offline": result.offline_seconds, "online": result.seconds - result.offline_seconds},
        teacher=result.teacher,
    )


def run_warm_start(ctx: MethodContext, config: "WarmStartConfig | None" = None) -> MethodOutcome:
    """CrossDomain-WarmStart: the related paper's three levels from the source domain ``hist``
    (:mod:`crossadapt.transfer.warm_start`), then the student trains exactly as Scratch does (``D_train``
    epochs, then the stream). ``train_seconds`` includes the two source models' training."""
    from crossadapt.training import configure_threads
    from crossadapt.transfer.warm_start import WarmStartConfig, warm_start_model

    configure_threads(ctx.threads)
    config = config or ctx.warm_start or WarmStartConfig()
    if "hist" not in ctx.splits or not len(ctx.splits["hist"]):
        raise ValueError("CrossDomain-WarmStart reads the source domain from the hist split, which this data lacks")
    started = time.perf_counter()
    warm = warm_start_model(ctx.student_config, ctx.feature_spec, ctx.splits["hist"], ctx.splits["train"], config,
                            seed=ctx.seed, batch_size=ctx.optim.batch_size, embedding_lr=ctx.optim.embedding_lr,
                            dense_lr=ctx.optim.dense_lr, device=ctx.device, threads=ctx.threads)
    warm_seconds = time.perf_counter() - started
    outcome = run_baseline_method(ctx, "Scratch", student=warm.model)
    outcome.name = "CrossDomain-WarmStart"
    outcome.train_seconds += warm_seconds
    if outcome.curve is not None:
        outcome.curve = Curve(name=outcome.name, seconds=[warm_seconds + s for s in outcome.curve.seconds],
                              auc=outcome.curve.auc)
    outcome.stage_seconds = {**warm.stage_seconds, **outcome.stage_seconds}
    outcome.details = {"warm_start": warm.details}
    return outcome


MethodRunner = Callable[[MethodContext], MethodOutcome]


def _baseline(name: str) -> MethodRunner:
    return lambda ctx: run_baseline_method(ctx, name)


METHODS: dict[str, MethodRunner] = {
    "Scratch": _baseline("Scratch"),
    "Scratch-Online": _baseline("Scratch-Online"),
    "Full-Retrain": _baseline("Full-Retrain"),
    "Vanilla-KD": _baseline("Vanilla-KD"),
    "Hint-KD": _baseline("Hint-KD"),
    "RKD": _baseline("RKD"),
    "CrossAdapt-Full": lambda ctx: run_crossadapt(ctx, AblationSection(sampling=False), name="CrossAdapt-Full"),
    "CrossAdapt-Sample": lambda ctx: run_crossadapt(ctx, name="CrossAdapt-Sample"),
    "CrossAdapt-Adaptive": lambda ctx: run_crossadapt(ctx, adaptive=True, name="CrossAdapt-Adaptive"),
    "CrossAdapt-Collaborative": lambda ctx: run_crossadapt(
        ctx, collaborative=ctx.online.collaborative or CollaborativeConfig(), name="CrossAdapt-Collaborative"),
    "CrossDomain-WarmStart": run_warm_start,
}


def run_method(name: str, ctx: MethodContext) -> MethodOutcome:
    """Run a Table 1 method or a Table 2 ablation (`"w/o projection"`, ...) by name."""
    if name in METHODS:
        return METHODS[name](ctx)
    if name in ABLATIONS:
        return run_crossadapt(ctx, AblationSection(**ABLATIONS[name][1]), name=name)
    raise ValueError(f"unknown method {name!r}; choose from {list(METHODS) + list(ABLATIONS)}")


def score(model: nn.Module, arrays: "SplitArrays", target: str = "click") -> dict[str, Any]:
    """Test figures of a model (AUC as a fraction, LogLoss, oracle AUC where the data has `prob`); for
    ``target`` 'conversion' the clicked rows' conversions."""
    from crossadapt.training import evaluate_model

    return evaluate_model(model, arrays, target=target, batch_size=EVAL_BATCH_ROWS)


def _pcvr_rows(train: "SplitArrays", sample: Any, sampler: Any, teacher: nn.Module) -> "SplitArrays":
    """D''_train (Eq. 9): the clicked sample plus ``unclicked_ratio`` unclicked exposures per sampled row,
    labelled with the teacher's pCVR."""
    from crossadapt.training import predict_logits
    from crossadapt.transfer.offline.unclicked import pcvr_training_rows

    unclicked = sampler.augment_unclicked(sample, train.label)
    logits = predict_logits(teacher, train.take(unclicked), batch_size=EVAL_BATCH_ROWS) if len(unclicked) else \
        np.zeros(0, np.float32)
    return pcvr_training_rows(train, sample.indices, unclicked, logits)
