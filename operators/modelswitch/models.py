"""The `ModelSwitch` spec and status as pydantic models, spelled as the CRD spells them (camelCase).

The CRD (charts/crossadapt/crds/modelswitches.crossadapt.io.yaml) is the source of truth; these models
mirror it field for field, with the same defaults, so a spec that skipped API-server defaulting (or a
hand-written status) reads the same. A test walks both and fails on any difference.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from operators.modelswitch.crd import Phase

STORE_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*){0,7}$"
ARCHITECTURES = ("mlp", "widedeep", "deepfm", "dcn", "dcnv2", "autoint", "afm", "fibinet", "xdeepfm")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", alias_generator=to_camel, populate_by_name=True)


# ----------------------------------------------------------------------------------------------- spec


class TeacherRef(_Model):
    checkpoint: str = Field(pattern=STORE_NAME, max_length=253)
    version: str = Field("", pattern=r"^(|latest|v[0-9]{6})$")


class StudentSpec(_Model):
    architecture: Literal["mlp", "widedeep", "deepfm", "dcn", "dcnv2", "autoint", "afm", "fibinet", "xdeepfm"]
    embedding_dim: int = Field(ge=1, le=4096)
    hidden: list[int] = Field(default_factory=lambda: [256, 128, 16], max_length=16)
    name: str | None = Field(None, max_length=200,
                             pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*){0,4}$")

    @model_validator(mode="after")
    def _widths(self) -> StudentSpec:
        if any(not 1 <= width <= 65536 for width in self.hidden):
            raise ValueError(f"student.hidden widths must lie in [1, 65536], got {self.hidden}")
        return self


class DataSpec(_Model):
    train: str = Field(pattern=STORE_NAME, max_length=253)
    stream: str = Field(pattern=STORE_NAME, max_length=253)
    replay: str | None = Field(None, pattern=STORE_NAME, max_length=253)


class SamplingSpec(_Model):
    ratio: float = Field(0.1, gt=0, le=1)
    positive_ratio: float = Field(0.5, gt=0, lt=1)
    temporal_blocks: int = Field(10, ge=1, le=1000)
    unclicked_ratio: float = Field(0.0, ge=0, le=1)


class DistillationSpec(_Model):
    kd_weight: float = Field(0.7, alias="lambda", ge=0, le=100)
    temperature: float = Field(4.0, gt=0, le=100)
    frozen_epochs: int = Field(1, ge=0, le=100)
    joint_epochs: int = Field(1, ge=0, le=100)
    # The switch's offline.distillation.kd_gate (crossadapt.transfer.switch_config.DistillationSection): both
    # distillers distil only the rows where the teacher's loss is below the student's, unless 'all' (the paper).
    kd_gate: Literal["all", "teacher_better"] = "teacher_better"

    @model_validator(mode="after")
    def _some_epochs(self) -> DistillationSpec:
        if self.frozen_epochs + self.joint_epochs < 1:
            raise ValueError("offline.distillation: frozenEpochs + jointEpochs must be at least 1")
        return self


class OfflineSpec(_Model):
    seed: int = Field(0, ge=0)
    sampling: SamplingSpec = Field(default_factory=SamplingSpec)
    distillation: DistillationSpec = Field(default_factory=DistillationSpec)
    # The switch's offline.reuse_teacher_network (crossadapt.transfer.switch_config.OfflineSection): a student of
    # the teacher's own network (same architecture and width) starts from the teacher's weights.
    reuse_teacher_network: bool = True


class OptimSpec(_Model):
    batch_size: int = Field(4096, ge=1, le=1_048_576)
    embedding_lr: float = Field(0.1, gt=0, le=100)
    dense_lr: float = Field(0.001, gt=0, le=100)


class DriftSpec(_Model):
    metric: Literal["js", "kl", "wasserstein"] = "js"
    windows: int = Field(10, ge=2, le=1000)
    bins: int = Field(50, ge=2, le=10000)
    theta_low: float = Field(0.01, ge=0)
    theta_high: float = Field(0.05, gt=0)
    max_replay: float = Field(0.1, ge=0, le=1)
    # The switch's online.drift.rolling / window_rows (DriftSection): the co-distiller re-estimates Δ_shift
    # from the stream every windowRows rows. ≥ 2, as the core's DriftSection requires (its noise floor halves
    # each window); at most int32, the co-distiller's field.
    rolling: bool = False
    window_rows: int = Field(100_000, ge=2, le=2_147_483_647)

    @model_validator(mode="after")
    def _ordered(self) -> DriftSpec:
        if self.theta_low >= self.theta_high:
            raise ValueError(f"online.drift: thetaLow {self.theta_low} must be below thetaHigh {self.theta_high}")
        return self


class CollaborativeSpec(_Model):
    """The switch's online.collaborative (the core's CollaborativeConfig, same defaults and ranges)."""

    weight: float = Field(1.0, gt=0)
    temperature: float = Field(1.0, gt=0)
    gate: Literal["student_better", "gap", "all"] = "student_better"
    scale_by_t2: bool = True


class OnlineSpec(_Model):
    enabled: bool = True
    teacher_update_interval: int = Field(10, ge=1, le=100000)
    drift: DriftSpec = Field(default_factory=DriftSpec)
    # None: the teacher learns from the labels only (the paper); present, even {}, it also distils from the
    # student (the core's defaults for what is left out).
    collaborative: CollaborativeSpec | None = None

    @model_validator(mode="after")
    def _needs_the_online_stage(self) -> OnlineSpec:
        # Both act only inside the co-distillation, which enabled: false skips; as the core's switch config
        # (collaborative needs co_evolution, i.e. a teacher trained online), a setting nothing would read is
        # an error rather than silently ignored.
        if not self.enabled and self.collaborative is not None:
            raise ValueError("online.collaborative trains the teacher during online co-distillation: "
                             "it needs online.enabled true")
        if not self.enabled and self.drift.rolling:
            raise ValueError("online.drift.rolling re-estimates the replay ratio during online co-distillation: "
                             "it needs online.enabled true")
        return self


class GatesSpec(_Model):
    max_auc_drop: float = Field(0.001, ge=0, le=1)
    max_log_loss_rise: float = Field(0.002, ge=0, le=10)
    max_calibration_bias: float = Field(0.05, ge=0, le=1)
    min_labels: int = Field(100_000, ge=1)


class TimeoutsSpec(_Model):
    shadow_seconds: int = Field(86400, ge=1, le=2592000)
    step_seconds: int = Field(86400, ge=1, le=2592000)


class RolloutSpec(_Model):
    strategy: Literal["BlueGreen"] = "BlueGreen"
    cohort_key: str = Field("user_id", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=63)
    steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100], min_length=1, max_length=20)
    gates: GatesSpec = Field(default_factory=GatesSpec)
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)
    auto_promote: bool = True

    @model_validator(mode="after")
    def _increasing(self) -> RolloutSpec:
        if any(not 1 <= step <= 100 for step in self.steps):
            raise ValueError(f"rollout.steps must lie in [1, 100], got {self.steps}")
        if any(later <= earlier for earlier, later in zip(self.steps, self.steps[1:])):
            raise ValueError(f"rollout.steps must increase strictly, got {self.steps}")
        return self


class ModelSwitchSpec(_Model):
    teacher: TeacherRef
    student: StudentSpec
    data: DataSpec
    offline: OfflineSpec = Field(default_factory=OfflineSpec)
    optim: OptimSpec = Field(default_factory=OptimSpec)
    online: OnlineSpec = Field(default_factory=OnlineSpec)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)
    paused: bool = False


# --------------------------------------------------------------------------------------------- status


class CheckpointStatus(_Model):
    name: str
    version: str = ""


class DatasetStatus(_Model):
    name: str
    # The sample's positive rate and its source's: the distiller's prior correction (class-balanced sample).
    positive_rate: float | None = None
    source_positive_rate: float | None = None


class OperationStatus(_Model):
    id: str | None = None
    state: Literal["Pending", "Running", "Succeeded", "Failed", "Cancelled"] | None = None
    progress: float | None = None
    stage: str | None = None
    message: str | None = None
    started_at: str | None = None


class OperationsStatus(_Model):
    projection: OperationStatus | None = None
    sampling: OperationStatus | None = None
    offline_distillation: OperationStatus | None = None
    drift: OperationStatus | None = None
    online_co_distillation: OperationStatus | None = None


class ArtifactsStatus(_Model):
    teacher: CheckpointStatus | None = None
    projected_student: CheckpointStatus | None = None
    sample: DatasetStatus | None = None
    offline_student: CheckpointStatus | None = None
    student: CheckpointStatus | None = None
    online_teacher: CheckpointStatus | None = None


class IntervalStatus(_Model):
    estimate: float | None = None
    lower: float | None = None
    upper: float | None = None
    level: float | None = None


class GateStatus(_Model):
    decision: Literal["Advance", "Hold", "RollBack"] | None = None
    reason: str | None = None
    message: str | None = None
    checked_at: str | None = None
    window_seconds: float | None = None
    paired_rows: int | None = None
    delta_auc: IntervalStatus | None = None
    delta_log_loss: IntervalStatus | None = None
    student_pcoc: IntervalStatus | None = None
    teacher_pcoc: IntervalStatus | None = None


class RolloutStatus(_Model):
    owns_predictor: bool | None = None
    student_arm_ready: bool | None = None
    teacher_restored: bool | None = None
    promotion_complete: bool | None = None
    serving_model: CheckpointStatus | None = None
    previous_teacher: CheckpointStatus | None = None


class Condition(_Model):
    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    last_transition_time: str | None = None
    observed_generation: int | None = None


class HistoryEntry(_Model):
    time: str
    phase: Phase
    student_percent: int | None = None
    reason: str | None = None
    message: str | None = None


class ModelSwitchStatus(_Model):
    phase: Phase | None = None
    reason: str | None = None
    message: str | None = None
    observed_generation: int | None = None
    revision: int | None = None
    attempt: int | None = None
    phase_started_at: str | None = None
    resume_phase: Phase | None = None
    step: int | None = None
    student_percent: int | None = Field(None, ge=0, le=100)
    step_started_at: str | None = None
    operations: OperationsStatus = Field(default_factory=OperationsStatus)
    artifacts: ArtifactsStatus = Field(default_factory=ArtifactsStatus)
    drift: dict[str, float] | None = None
    gate: GateStatus | None = None
    rollout: RolloutStatus = Field(default_factory=RolloutStatus)
    conditions: list[Condition] = Field(default_factory=list)
    history: list[HistoryEntry] = Field(default_factory=list)

    def to_dict(self) -> dict:
        """The status as the API stores it: camelCase, unset fields and empty sections left out."""
        return _without_empty(self.model_dump(mode="json", by_alias=True, exclude_none=True))


def _without_empty(value: dict) -> dict:
    result = {}
    for key, inner in value.items():
        if isinstance(inner, dict):
            inner = _without_empty(inner)
            if not inner:
                continue
        result[key] = inner
    return result


STATUS_KEYS = frozenset(field.alias or name for name, field in ModelSwitchStatus.model_fields.items())


def owned_status(raw: dict | None) -> dict:
    """The part of a stored status the operator writes (others' fields, e.g. kopf's, are left alone)."""
    return {key: value for key, value in (raw or {}).items() if key in STATUS_KEYS}


def read_status(raw: dict | None) -> ModelSwitchStatus:
    """The operator's status from the stored object."""
    return ModelSwitchStatus.model_validate(owned_status(raw))
