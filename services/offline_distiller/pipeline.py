"""The distillation task without Celery: inputs, the training run, checkpoints, the published student.

    run_distillation(ctx, plan, report)
      inputs: the sample (+ teacher logits, computed once if it has none), validation rows (adaptive λ: the
              most recent offline_valid_rows, read from the newest partitions back, scored by the teacher
              if they carry no logits), the teacher's
              vocabulary, and the student: the newest work-in-progress checkpoint of this operation if
              there is one, else a fresh student whose tables are the projector's output
      train:  core ProgressiveDistillation (frozen, then joint), one process or DDP over `world_size`;
              every `checkpoint_every_steps` steps (or at each epoch end) a work-in-progress checkpoint
              `wip/offline-distiller/<op>/vN` (weights + run state: cursor, optimiser, RNG)
      publish: the student into the version claimed at Start (parent: the teacher; stage seconds and
              config in the manifest; its optimiser state as training/optimizer.pt)

A restarted task resumes from the newest work-in-progress checkpoint: the steps re-done after a
lost worker are those since it, at most one checkpoint interval, and the result is bit-for-bit the
uninterrupted run's (same batches, optimiser and RNG state).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from crossadapt.data.arrays import SplitArrays
from crossadapt.metrics import log_odds
from crossadapt.models import build_model, parse_model_config
from crossadapt.training import positive_rate, seed_everything, select_target_rows
from crossadapt.transfer.network_reuse import reuse_teacher_network
from crossadapt.transfer.offline.distillation import (
    OfflineDistillResult,
    ProgressiveDistillation,
    adaptive_valid_slice,
    cache_teacher_logits,
)
from services.common.checks import read_recent_rows, read_rows
from services.common.errors import DataLossError
from services.common.model_io import load_model, load_vocabulary, publish_model
from services.common.storage.checkpoints import CheckpointNotFoundError, CheckpointStore, PublishedCheckpoint
from services.common.storage.tables import NUMERICAL_TABLE, read_table
from services.common.training_state import (
    OPTIMIZER_FILE,
    default_device,
    delete_version,
    read_state,
    tensor_bytes,
)
from services.offline_distiller.context import DistillerContext
from services.offline_distiller.ddp import train_data_parallel
from services.offline_distiller.plan import DistillationPlan
from services.offline_distiller.training_run import (  # DistillationInputs, build_run: this module's API too
    EVAL_BATCH_ROWS,
    DistillationInputs,
    build_run,
    core_config,
)

log = logging.getLogger(__name__)
RUN_STATE_FILE = "training/distillation.pt"
ReportFn = Callable[..., None]  # Reporter(fraction, *, force=False, stage=None, details=None)


# ---- inputs -------------------------------------------------------------------------------------
def student_base_rate(plan: DistillationPlan, train: SplitArrays) -> float | None:
    """The data's positive rate the student starts at: the configured one, else the sample's rate (of the
    target's label) with the prior correction undone (logit(data) = logit(sample) - task_logit_shift)."""
    if plan.settings.base_rate is not None:
        return plan.settings.base_rate
    rate = positive_rate(train, plan.settings.target)
    if rate is None:
        return None
    return 1.0 / (1.0 + math.exp(-(log_odds(rate) - plan.settings.task_logit_shift)))


class TeacherSource:
    """The plan's teacher: its checkpoint resolved once, its model loaded once and only when first asked for
    (to score rows, and to give a student of its own network that network)."""

    def __init__(self, checkpoints: CheckpointStore, plan: DistillationPlan) -> None:
        self.checkpoints, self.plan = checkpoints, plan
        self.checkpoint = checkpoints.resolve(plan.teacher.name, plan.teacher.version)
        self._model: nn.Module | None = None

    def model(self) -> nn.Module:
        if self._model is None:
            self._model, _ = load_model(self.checkpoints, self.plan.teacher.name, self.plan.teacher.version)
        return self._model


def initial_student(checkpoints: CheckpointStore, plan: DistillationPlan, train: SplitArrays,
                    teacher: TeacherSource | None = None) -> tuple[nn.Module, dict[str, list[str]]]:
    """A fresh student whose embedding tables are the projected ones; fields the teacher lacks stay random.
    A student of the teacher's own network (``reuse_teacher_network``) then takes that network from the
    teacher; ``teacher_network`` in the report lists the tensors it took (none for any other student).

    Seeded like the in-process switch (seed_everything, then build_model), so every other weight matches it.
    """
    seed_everything(plan.settings.seed)
    student = build_model(parse_model_config(plan.model), plan.feature_spec, base_rate=student_base_rate(plan, train))
    projected = checkpoints.resolve(plan.projected.name, plan.projected.version)
    available = set((projected.manifest.extra.get("tables") or {}).keys())
    report: dict[str, list[str]] = {"projected": [], "random": [], "ignored": sorted(available - set(
        student.embedding.table_names()))}
    for table in student.embedding.table_names():
        if table not in available:
            report["random"].append(table)
            continue
        values = read_table(checkpoints, projected, table)
        if table == NUMERICAL_TABLE:  # one row per numerical field: match them by name
            source = list(projected.manifest.feature_spec.numerical)
            current = student.embedding.get_table(table).numpy()
            for row, name in enumerate(plan.feature_spec.numerical):
                if name in source:
                    current[row] = values[source.index(name)]
            values = current
        student.embedding.set_table(table, torch.from_numpy(values))
        report["projected"].append(table)
    report["teacher_network"] = _take_teacher_network(plan, teacher or TeacherSource(checkpoints, plan), student)
    return student, report


def _take_teacher_network(plan: DistillationPlan, teacher: TeacherSource, student: nn.Module) -> list[str]:
    """The tensors a student of the teacher's own network takes from it; none when not configured, when the
    teacher's checkpoint holds no model or one over other fields, or for another network."""
    if not plan.settings.reuse_teacher_network:
        return []
    manifest = teacher.checkpoint.manifest
    if "model.safetensors" not in manifest.files or manifest.feature_spec != plan.feature_spec:
        return []
    return reuse_teacher_network(teacher.model(), student).copied


def latest_work_in_progress(ctx: DistillerContext, plan: DistillationPlan,
                            ) -> tuple[nn.Module, dict[str, Any], PublishedCheckpoint] | None:
    """The newest readable work-in-progress checkpoint of this operation (an unreadable one is dropped)."""
    for version in reversed(ctx.checkpoints.versions(plan.wip_name)):
        try:
            model, published = load_model(ctx.checkpoints, plan.wip_name, version)
            return model, read_state(ctx.checkpoints, published, RUN_STATE_FILE), published
        except (DataLossError, CheckpointNotFoundError) as exc:
            log.warning("dropping an unreadable work-in-progress checkpoint",
                        extra={"operation_id": plan.operation_id, "version": version, "error": str(exc)})
            delete_version(ctx.checkpoints, plan.wip_name, version)
    return None


def read_validation(ctx: DistillerContext, plan: DistillationPlan) -> SplitArrays | None:
    """The validation rows the run uses. Adaptive λ measures only the most recent `offline_valid_rows` (of
    the target's rows): only the newest partitions that hold them are read, so a long split costs its tail."""
    if plan.validation is None:
        return None
    if plan.settings.adaptive is None:
        return read_rows(ctx.datasets, plan.validation, plan.feature_spec, "validation")
    config = core_config(plan, "cpu")
    valid = read_recent_rows(ctx.datasets, plan.validation, plan.feature_spec, "validation",
                             plan.settings.adaptive.offline_valid_rows,
                             count=lambda part: len(select_target_rows(part, plan.settings.target)))
    # the core's slice of these newest partitions: the rows it would take from the whole split
    return adaptive_valid_slice(valid, config)


def load_inputs(ctx: DistillerContext, plan: DistillationPlan) -> DistillationInputs:
    train = read_rows(ctx.datasets, plan.sample, plan.feature_spec, "sample")
    valid = read_validation(ctx, plan)
    teacher = TeacherSource(ctx.checkpoints, plan)
    teacher_seconds = 0.0
    if plan.needs_teacher_logits or (valid is not None and plan.validation_needs_teacher_logits):
        started = time.perf_counter()
        if plan.needs_teacher_logits:
            train = train.with_teacher_logit(cache_teacher_logits(teacher.model(), train, EVAL_BATCH_ROWS))
        if valid is not None and plan.validation_needs_teacher_logits:  # as the core scores its slice
            valid = valid.with_teacher_logit(cache_teacher_logits(teacher.model(), valid, EVAL_BATCH_ROWS))
        teacher_seconds = time.perf_counter() - started
    vocabulary = load_vocabulary(ctx.checkpoints, teacher.checkpoint)
    if vocabulary is not None and vocabulary.hash != plan.vocab_hash:
        vocabulary = None  # validated at Start from the manifests; a disagreeing file is not passed on
    inputs = DistillationInputs(train=train, valid=valid, student=nn.Identity(), vocabulary=vocabulary,
                                teacher_logit_seconds=teacher_seconds)
    resumed = latest_work_in_progress(ctx, plan)
    if resumed is not None:
        inputs.student, inputs.state, published = resumed
        inputs.resumed_from = published.ref
        inputs.tables = published.manifest.extra.get("initial_tables", {})
    else:
        inputs.student, inputs.tables = initial_student(ctx.checkpoints, plan, train, teacher)
    return inputs


# ---- training -----------------------------------------------------------------------------------
def history(run: ProgressiveDistillation) -> list[dict[str, Any]]:
    """Per-epoch rows (phase, epoch, train loss, validation AUC / LogLoss) for the operation's details."""
    rows = []
    for record in run.records:
        for epoch, loss in enumerate(record.train_loss):
            metrics = record.valid[epoch] if epoch < len(record.valid) else {}
            rows.append({"phase": record.name, "epoch": epoch, "train_loss": loss,
                         "valid_auc": metrics.get("auc"), "valid_logloss": metrics.get("logloss")})
    return rows


TRACE_ENTRIES = 64  # the newest evaluations kept in the operation's details; the student's manifest keeps all


def adaptive_details(trainer: Any) -> dict[str, Any] | None:
    """Why λ moved, for the operation's details: the teacher's validation LogLoss, then per evaluation
    [step, relative gap (EMA; > 0: the student is better), λ], rounded, newest TRACE_ENTRIES only."""
    trace = getattr(trainer, "trace", None)
    if trace is None:  # a fixed λ
        return None
    return {"lambda": round(float(trainer.kd_weight), 4), "evaluations": len(trace),
            "every_steps": trainer.every, "valid_rows": len(trainer.valid),
            "teacher_valid_logloss": round(float(trainer.teacher_valid_logloss), 5),
            "trace": [[int(step), round(float(gap), 5), round(float(weight), 4)]
                      for step, gap, weight in trace[-TRACE_ENTRIES:]]}


class Checkpointer:
    """The training callback of rank 0: progress, cancel checks and work-in-progress checkpoints."""

    def __init__(self, ctx: DistillerContext, plan: DistillationPlan, report: ReportFn,
                 initial_tables: dict[str, list[str]]) -> None:
        self.ctx, self.plan, self.report, self.initial_tables = ctx, plan, report, initial_tables
        self.every = plan.settings.checkpoint_every_steps
        self.last: PublishedCheckpoint | None = None

    def __call__(self, run: ProgressiveDistillation, event: str) -> None:
        fraction = run.cursor.steps / max(run.total_steps, 1)
        stage = None if run.finished else run.phase_name
        due = not run.finished and (run.cursor.steps % self.every == 0 if self.every else event == "epoch")
        if event == "step" and not (self.every and due):
            self.report(fraction, stage=stage)
            return
        details: dict[str, Any] = {"steps": run.cursor.steps, "total_steps": run.total_steps,
                                   "epoch": run.epochs_done, "epochs": run.total_epochs, "history": history(run)}
        adaptive = adaptive_details(run.trainer)
        if adaptive is not None:
            details["adaptive"] = adaptive
        if due:
            self.save(run)
            details["checkpoint"] = {"ref": self.last.ref, "step": run.cursor.steps}  # type: ignore[union-attr]
        self.report(fraction, force=True, stage=stage, details=details)

    def save(self, run: ProgressiveDistillation) -> PublishedCheckpoint:
        """Publish the run's weights and state as the next work-in-progress version, then drop older ones."""
        checkpoints, plan = self.ctx.checkpoints, self.plan
        version = checkpoints.claim_version(plan.wip_name, owner=plan.operation_id)
        self.last = publish_model(
            checkpoints, plan.wip_name, run.trainer.model, version=version, feature_spec=plan.feature_spec,
            vocab_hash=plan.vocab_hash, operation_id=plan.operation_id, parent=plan.projected.ref,
            extra={"work_in_progress": True, "cursor": asdict(run.cursor), "initial_tables": self.initial_tables},
            files={RUN_STATE_FILE: tensor_bytes(run.state_dict())}, tables=False)
        for older in checkpoints.versions(plan.wip_name):
            if older < version:
                delete_version(checkpoints, plan.wip_name, older)
        log.info("checkpoint saved", extra={"operation_id": plan.operation_id, "checkpoint": self.last.ref,
                                            "step": run.cursor.steps})
        return self.last


def train(plan: DistillationPlan, inputs: DistillationInputs, callback: Callable[..., None] | None,
          ) -> tuple[ProgressiveDistillation, OfflineDistillResult]:
    """One process, or data parallel over `world_size` local processes (services.offline_distiller.ddp)."""
    if plan.settings.world_size == 1:
        run = build_run(plan, inputs, device=default_device())
        return run, run.run(callback)
    return train_data_parallel(plan, inputs, callback)


# ---- publishing ---------------------------------------------------------------------------------
def publish_student(ctx: DistillerContext, plan: DistillationPlan, inputs: DistillationInputs,
                    result: OfflineDistillResult) -> PublishedCheckpoint:
    stage_seconds = {"teacher_logits": round(inputs.teacher_logit_seconds, 3),
                     **{record.name: round(record.seconds, 3) for record in result.phases},
                     "train_total": round(result.seconds, 3),
                     # CPU seconds of this process (every thread) while training: against train_total, how much
                     # of the wall time the run had the CPU (a loaded machine shows as cpu < wall × threads)
                     "train_cpu": round(inputs.train_cpu_seconds, 3)}
    last_valid = next((record.valid[-1] for record in reversed(result.phases) if record.valid), {})
    metrics = {f"valid_{k}": v for k, v in last_valid.items() if isinstance(v, (int, float)) and k in ("auc", "logloss")}
    extra = {
        "stage_seconds": stage_seconds, "config": plan.settings.model_dump(mode="json"),
        "projected_student": plan.projected.ref, "sample": plan.sample, "rows": result.rows,
        "initial_tables": inputs.tables, "role": "student", "resumed_from": inputs.resumed_from,
        # intra-op threads the training ran with: a worker's timing is comparable with an in-process one only if equal
        "torch_threads": torch.get_num_threads(),
        "phases": [{"name": r.name, "epochs": r.epochs, "steps": r.steps, "train_loss": r.train_loss,
                    "task_loss": r.task_loss, "kd_loss": r.kd_loss, "kd_weight_end": r.kd_weight_end}
                   for r in result.phases],
    }
    if result.kd_weight_trace:  # adaptive λ: every evaluation's (step, gap, λ)
        extra["kd_weight_trace"] = [list(entry) for entry in result.kd_weight_trace]
    return publish_model(
        ctx.checkpoints, plan.student_name, result.student, version=plan.student_version,
        feature_spec=plan.feature_spec, vocab_hash=plan.vocab_hash, operation_id=plan.operation_id, vocabulary=inputs.vocabulary,
        parent=plan.teacher.ref, metrics=metrics, extra=_json_safe(extra),
        files={OPTIMIZER_FILE: tensor_bytes(result.optimizer_state)})


def _json_safe(value: Any) -> Any:
    """NaN/inf (a loss of an empty phase) as None: manifests are strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


def run_distillation(ctx: DistillerContext, plan: DistillationPlan, report: ReportFn) -> PublishedCheckpoint:
    """The whole task: inputs, training (resumed if a checkpoint exists), the published student."""
    started = time.perf_counter()
    inputs = load_inputs(ctx, plan)
    loaded = time.perf_counter()
    log.info("inputs loaded", extra={"operation_id": plan.operation_id, "seconds": round(loaded - started, 3),
                                     "rows": len(inputs.train), "resumed_from": inputs.resumed_from})
    report(0.0, force=True, details={"initial_tables": inputs.tables, "resumed_from": inputs.resumed_from,
                                     "sample_rows": len(inputs.train)})
    checkpointer = Checkpointer(ctx, plan, report, inputs.tables)
    cpu = time.process_time()
    run, result = train(plan, inputs, checkpointer)
    trained = time.perf_counter()
    inputs.train_cpu_seconds = time.process_time() - cpu
    log.info("training finished", extra={"operation_id": plan.operation_id, "seconds": round(trained - loaded, 3),
                                         "world_size": plan.settings.world_size, "threads": torch.get_num_threads()})
    details: dict[str, Any] = {"history": [{"phase": r.name, "train_loss": r.train_loss, "valid": r.valid,
                                            "kd_weight_end": r.kd_weight_end} for r in result.phases]}
    adaptive = adaptive_details(run.trainer)
    if adaptive is not None:
        details["adaptive"] = adaptive
    report(1.0, force=True, stage="publish", details=_json_safe(details))
    published = publish_student(ctx, plan, inputs, result)
    log.info("student published", extra={"operation_id": plan.operation_id, "checkpoint": published.ref,
                                         "seconds": round(time.perf_counter() - trained, 3)})
    return published
