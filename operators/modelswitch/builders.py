"""Pure builders: names, request ids, service requests, conditions, history and the status patch.

Everything here is a function of the switch's spec and status (and the time it is given), so a
restarted operator rebuilds exactly the requests it sent before: with the same `request_id`, a
service answers with the operation it already started instead of starting a second one.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime, timezone
from typing import Any

from operators.modelswitch.clients import (
    CheckpointRef,
    CoDistillationRequest,
    Collaborative,
    DistillationRequest,
    DriftRequest,
    DriftSettings,
    Optimiser,
    ProjectionRequest,
    SamplingRequest,
    Split,
    StudentModel,
)
from operators.modelswitch.crd import FINAL_PHASES, ROLLOUT_PHASES, TRAINING_PHASES, Phase
from operators.modelswitch.models import CheckpointStatus, Condition, DatasetStatus, HistoryEntry, ModelSwitchSpec

HISTORY_LIMIT = 50  # the CRD's status.history maxItems


# ------------------------------------------------------------------------------------------ identity


def timestamp(now: datetime) -> str:
    """RFC 3339 in UTC with second precision, as Kubernetes writes times."""
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def artifact_prefix(namespace: str, name: str, spec: ModelSwitchSpec) -> str:
    """Checkpoint/dataset name prefix of what this switch publishes."""
    return spec.student.name or f"modelswitch/{namespace}/{name}"


def request_id(namespace: str, name: str, uid: str, stage: str, attempt: int) -> str:
    """The idempotency key of one stage's start: the same switch, stage and attempt give the same key.

    The uid tells apart a switch deleted and created again under the same name."""
    return f"modelswitch/{namespace}/{name}/{uid or '-'}/{stage}/{attempt}"


def split_salt(namespace: str, name: str, uid: str) -> str:
    """The cohort hash salt of one switch: fixed for its whole rollout, so a user who saw the student at
    5% keeps seeing it at 25% (buckets only grow), and a new switch reshuffles the cohorts."""
    return hashlib.sha256(f"{namespace}/{name}/{uid}".encode()).hexdigest()[:16]


def student_split(percent: int, namespace: str, name: str, uid: str) -> Split:
    return Split(student_weight=percent / 100.0, salt=split_salt(namespace, name, uid))


def checkpoint_ref(status: CheckpointStatus | None) -> CheckpointRef:
    if status is None:
        raise ValueError("a checkpoint the next stage needs is missing from status.artifacts")
    return CheckpointRef(status.name, status.version)


# ------------------------------------------------------------------------------------------ requests


def teacher_ref(spec: ModelSwitchSpec) -> CheckpointRef:
    return CheckpointRef(spec.teacher.checkpoint, spec.teacher.version)


def drift_settings(spec: ModelSwitchSpec) -> DriftSettings:
    drift = spec.online.drift
    return DriftSettings(metric=drift.metric, windows=drift.windows, bins=drift.bins, theta_low=drift.theta_low,
                         theta_high=drift.theta_high, max_replay=drift.max_replay, rolling=drift.rolling,
                         window_rows=drift.window_rows)


def collaborative(spec: ModelSwitchSpec) -> Collaborative | None:
    """spec.online.collaborative for the co-distiller, or None: the paper's teacher (labels only)."""
    section = spec.online.collaborative
    if section is None:
        return None
    return Collaborative(weight=section.weight, temperature=section.temperature, gate=section.gate,
                         scale_by_t2=section.scale_by_t2)


def projection_request(spec: ModelSwitchSpec, prefix: str, request: str) -> ProjectionRequest:
    return ProjectionRequest(teacher=teacher_ref(spec), student_name=f"{prefix}/projected",
                             width=spec.student.embedding_dim, seed=spec.offline.seed, request_id=request)


def sampling_request(spec: ModelSwitchSpec, prefix: str, request: str) -> SamplingRequest:
    sampling = spec.offline.sampling
    return SamplingRequest(dataset=spec.data.train, teacher=teacher_ref(spec), ratio=sampling.ratio,
                           positive_ratio=sampling.positive_ratio, temporal_blocks=sampling.temporal_blocks,
                           unclicked_ratio=sampling.unclicked_ratio, seed=spec.offline.seed,
                           sample_name=f"{prefix}/sample", request_id=request)


def prior_shift(sample: DatasetStatus | None) -> float:
    """logit(sample rate) − logit(source rate): the BCE logit shift that keeps a student distilled on a
    class-balanced sample calibrated to the real base rate (the in-process switch's prior correction);
    0 when a rate is unknown or degenerate."""
    if sample is None or sample.positive_rate is None or sample.source_positive_rate is None:
        return 0.0
    rates = (sample.positive_rate, sample.source_positive_rate)
    if not all(0.0 < rate < 1.0 for rate in rates):
        return 0.0
    return math.log(rates[0] / (1 - rates[0])) - math.log(rates[1] / (1 - rates[1]))


def distillation_request(spec: ModelSwitchSpec, prefix: str, projected: CheckpointRef, sample: str,
                         request: str, task_logit_shift: float = 0.0) -> DistillationRequest:
    distillation = spec.offline.distillation
    model = StudentModel(spec.student.architecture, spec.student.embedding_dim, tuple(spec.student.hidden))
    return DistillationRequest(student=projected, teacher=teacher_ref(spec), sample=sample,
                               kd_weight=distillation.kd_weight, temperature=distillation.temperature,
                               frozen_epochs=distillation.frozen_epochs, joint_epochs=distillation.joint_epochs,
                               seed=spec.offline.seed, student_name=f"{prefix}/offline", student_model=model,
                               request_id=request, task_logit_shift=task_logit_shift, optim=optimiser(spec),
                               kd_gate=distillation.kd_gate, reuse_teacher_network=spec.offline.reuse_teacher_network)


def optimiser(spec: ModelSwitchSpec) -> Optimiser:
    return Optimiser(spec.optim.batch_size, spec.optim.embedding_lr, spec.optim.dense_lr)


def drift_request(spec: ModelSwitchSpec, request: str) -> DriftRequest:
    return DriftRequest(reference=spec.data.train, stream=spec.data.stream, drift=drift_settings(spec),
                        request_id=request)


def codistillation_request(spec: ModelSwitchSpec, prefix: str, offline_student: CheckpointRef,
                           request: str) -> CoDistillationRequest:
    distillation = spec.offline.distillation
    return CoDistillationRequest(student=offline_student, teacher=teacher_ref(spec), stream=spec.data.stream,
                                 replay=spec.data.replay or spec.data.train,
                                 teacher_update_interval=spec.online.teacher_update_interval,
                                 kd_weight=distillation.kd_weight, temperature=distillation.temperature,
                                 drift=drift_settings(spec), seed=spec.offline.seed,
                                 student_name=f"{prefix}/student", teacher_name=f"{prefix}/teacher",
                                 request_id=request, optim=optimiser(spec),
                                 # offline.distillation's gate, as the switch's kd_gate covers both stages
                                 kd_gate=distillation.kd_gate, collaborative=collaborative(spec))


def drift_figures(details: dict[str, Any]) -> dict[str, float]:
    """The scalar figures of a drift report (nested ones flattened with dots), for status.drift."""
    import math

    figures: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)) and math.isfinite(value):
            figures[prefix] = float(value)
        elif isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)

    walk("", details)
    return dict(sorted(figures.items())[:32])


# ------------------------------------------------------------------------------- conditions, history


def phase_conditions(phase: Phase, promotion_complete: bool) -> dict[str, bool]:
    """Condition type → status implied by a phase."""
    return {
        "Ready": phase is Phase.PROMOTED and promotion_complete,
        "Progressing": phase is Phase.PENDING or phase in TRAINING_PHASES or phase in ROLLOUT_PHASES
        or (phase is Phase.PROMOTED and not promotion_complete),
        "Paused": phase is Phase.PAUSED,
        "Degraded": phase in (Phase.ROLLED_BACK, Phase.FAILED),
    }


def set_condition(conditions: list[Condition], kind: str, value: bool, reason: str, message: str, now: datetime,
                  generation: int | None) -> list[Condition]:
    """`conditions` with `kind` set; lastTransitionTime moves only when the status flips."""
    status = "True" if value else "False"
    result, found = [], False
    for condition in conditions:
        if condition.type != kind:
            result.append(condition)
            continue
        found = True
        flipped = condition.status != status
        result.append(Condition(type=kind, status=status, reason=reason if flipped else condition.reason,
                                message=message if flipped else condition.message,
                                last_transition_time=timestamp(now) if flipped else condition.last_transition_time,
                                observed_generation=generation))
    if not found:
        result.append(Condition(type=kind, status=status, reason=reason, message=message,
                                last_transition_time=timestamp(now), observed_generation=generation))
    return result


def with_history(history: list[HistoryEntry], entry: HistoryEntry) -> list[HistoryEntry]:
    return [*history, entry][-HISTORY_LIMIT:]


def is_final(phase: Phase | None) -> bool:
    return phase in FINAL_PHASES


# ------------------------------------------------------------------------------------------- patches


def merge_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that turns `old` into `new` (None removes a key)."""
    patch: dict[str, Any] = {}
    for key in old.keys() - new.keys():
        patch[key] = None
    for key, value in new.items():
        before = old.get(key)
        if isinstance(value, dict) and isinstance(before, dict):
            inner = merge_patch(before, value)
            if inner:
                patch[key] = inner
        elif value != before or key not in old:
            patch[key] = value
    return patch
