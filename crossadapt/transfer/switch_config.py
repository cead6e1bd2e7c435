"""`SwitchConfig`: what `crossadapt switch --config FILE` reads (YAML or JSON), with the paper's defaults.

Paper defaults (Appendix B): λ 0.7, T 4, r 0.1, r_pos 0.5, K 10, τ 10, JS drift over n 10 windows with
b 50 bins, θ_low 0.01 / θ_high 0.05, k 0.1. The optimiser is the exception: by default its batch and
embedding lr are fitted to the data's rows (`optim: data`); `optim: paper` gives the paper's batch 4096,
Adam lr 0.1 (embeddings) / 1e-3 (network).
Every section forbids unknown keys, so a typo is an error that names the field.

Example (YAML)::

    data: {synthetic: {preset: small, rows: 20000}}
    teacher: {train: {model: {architecture: mlp, embedding_dim: 8, hidden_units: [64, 32, 4]}}}
    student: {model: {architecture: fibinet, embedding_dim: 16, hidden_units: [256, 128, 16]}}
    baselines: [Scratch]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from crossadapt.models.config import ModelConfig, paper_student_config, paper_teacher_config
from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
from crossadapt.transfer.online.config import CollaborativeConfig
from crossadapt.transfer.warm_start_config import WarmStartConfig
from crossadapt.transfer.optim_fit import (
    DEFAULT_STEPS_PER_EPOCH,
    PAPER_BATCH,
    PAPER_DENSE_LR,
    PAPER_EMBEDDING_LR,
    OptimChoice,
    OptimPreset,
    choose_optim,
)

# Spelled out (and checked against crossadapt.transfer.experiments.baselines.BASELINES by a test) so that reading a
# config does not import torch.
BASELINE_NAMES = ("Scratch", "Scratch-Online", "Full-Retrain", "Vanilla-KD", "Hint-KD", "RKD")
#: Methods besides the baselines that `baselines` may name as comparisons (the related papers').
COMPARISON_NAMES = ("CrossDomain-WarmStart",)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SyntheticData(_Section):
    """Generate a synthetic CTR dataset (with true click probabilities) and prepare it."""

    preset: Literal["criteo_like", "small", "strong_interactions", "long_history"] = "criteo_like"
    rows: int = Field(200_000, ge=1_000, description="Rows over all splits (hist:train:online:test = 4:4:1:1; "
                      "long_history: 12:2:1:1).")
    seed: int = 0


class DataSection(_Section):
    """Exactly one of `dir` (a prepared dataset folder) or `synthetic`."""

    dir: Path | None = None
    synthetic: SyntheticData | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "DataSection":
        if (self.dir is None) == (self.synthetic is None):
            raise ValueError("give exactly one of data.dir (a prepared dataset) or data.synthetic")
        if self.dir is not None and not (self.dir / "dataset.json").is_file():
            raise ValueError(f"data.dir {str(self.dir)!r} is not a prepared dataset (no dataset.json)")
        return self


class TeacherTraining(_Section):
    """Train the teacher on hist ∪ train first (what production would already have)."""

    model: ModelConfig = Field(default_factory=paper_teacher_config)
    epochs: int = Field(1, ge=1)


class TeacherSection(_Section):
    """Exactly one of `checkpoint` (a checkpoint folder) or `train`."""

    checkpoint: Path | None = None
    train: TeacherTraining | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "TeacherSection":
        if (self.checkpoint is None) == (self.train is None):
            raise ValueError("give exactly one of teacher.checkpoint or teacher.train")
        if self.checkpoint is not None and not (self.checkpoint / "manifest.json").is_file():
            raise ValueError(f"teacher.checkpoint {str(self.checkpoint)!r} has no manifest.json")
        return self


class StudentSection(_Section):
    model: ModelConfig = Field(default_factory=paper_student_config)


class SamplingSection(_Section):
    """Strategic sampling (Sec. 3.1.3): ratio r, positive ratio r_pos, K temporal blocks."""

    ratio: float = Field(0.1, gt=0.0, le=1.0)
    positive_ratio: float = Field(0.5, gt=0.0, lt=1.0)
    temporal_blocks: int = Field(10, ge=1)
    prior_correction: bool = Field(
        True,
        description="Beyond the paper: shift the student's logit in the BCE term by logit(sample positive "
        "rate) - logit(data positive rate), so a class-balanced sample does not move the student's base "
        "rate away from the teacher's KD targets (see distill.OfflineDistillConfig.task_logit_shift).",
    )
    target: Literal["click", "conversion"] = Field(
        "click",
        description="The label the sample is drawn on: 'click' (pCTR, every row) or 'conversion' (pCVR: the "
        "clicked rows, balanced by their conversion label), as the sampler service's SamplingConfig.target.",
    )
    unclicked_ratio: float = Field(
        0.0,
        ge=0.0,
        description="r_unclick (pCVR, Eq. 9; crossadapt.transfer.offline.unclicked): unclicked exposures added per "
        "sampled clicked row, labelled with the teacher's pCVR. 0 = no augmentation; > 0 needs target "
        "'conversion'.",
    )

    @model_validator(mode="after")
    def _unclicked_needs_conversion(self) -> "SamplingSection":
        if self.unclicked_ratio > 0 and self.target != "conversion":
            raise ValueError("unclicked_ratio > 0 augments a pCVR sample: set offline.sampling.target to 'conversion'")
        return self


class DistillationSection(_Section):
    """Progressive distillation (Sec. 3.1.2): L = BCE + λ·KD at temperature T; frozen then joint epochs."""

    kd_weight: float = Field(0.7, alias="lambda", ge=0.0)
    temperature: float = Field(4.0, gt=0.0)
    frozen_epochs: int = Field(1, ge=0)
    joint_epochs: int = Field(1, ge=0)
    kd_gate: Literal["all", "teacher_better"] = Field(
        "teacher_better", description="Beyond the paper (the default): 'teacher_better' distills only rows where "
        "the teacher's loss on the true label is below the student's (offline and online), so a student that "
        "outgrows its teacher is not pulled back to it; 'all' = the paper. Since the teacher learns online at the "
        "student's lr, 'all' is 0.00-0.23 AUC pp ahead of the gate on the bench settings, but the demo's student "
        "distilled on every row keeps the teacher's over-prediction (PCOC 1.157: rolled back), which the gate "
        "avoids (bench/README, 'The KD gate, measured again').")

    @model_validator(mode="after")
    def _some_epochs(self) -> "DistillationSection":
        if self.frozen_epochs + self.joint_epochs == 0:
            raise ValueError("offline.distillation needs frozen_epochs + joint_epochs >= 1")
        return self


class OfflineSection(_Section):
    sampling: SamplingSection = SamplingSection()
    distillation: DistillationSection = DistillationSection()
    reuse_teacher_network: bool = Field(
        True, description="Beyond the paper (the default): when the student's network outside its embedding "
        "tables is the teacher's (the same architecture at the same width), it starts from the teacher's weights "
        "and logit offset instead of a random init (crossadapt.transfer.network_reuse); the tables are projected "
        "either way. Any other student is unaffected. False: the paper's student, only the tables transferred.")


class DriftSection(_Section):
    """Shift detection and replay (Sec. 3.2.2, Eq. 13-14)."""

    metric: Literal["js", "kl", "wasserstein"] = "js"
    windows: int = Field(10, ge=2)
    bins: int = Field(50, ge=2)
    theta_low: float = Field(0.01, ge=0.0)
    theta_high: float = Field(0.05, gt=0.0)
    max_replay: float = Field(0.1, ge=0.0, le=1.0, description="k: replay ratio when the data is stable.")
    rolling: bool = Field(
        False,
        description="Beyond the paper: re-estimate Δ_shift from the online stream window by window "
        "(crossadapt.transfer.drift.rolling.RollingDrift) and update r_enh as it changes; False: Δ_shift "
        "of D_train fixes r_enh once, as in the paper.",
    )
    window_rows: int = Field(
        100_000, ge=2, description="Rows per stream window when rolling (the noise floor halves each window)."
    )

    @model_validator(mode="after")
    def _ordered(self) -> "DriftSection":
        if self.theta_low >= self.theta_high:
            raise ValueError(f"online.drift needs theta_low < theta_high, got {self.theta_low} >= {self.theta_high}")
        return self


class OnlineSection(_Section):
    """Asymmetric co-distillation over the online split (Sec. 3.2.1): teacher steps every τ batches."""

    teacher_update_interval: int = Field(10, ge=1)
    teacher_lr: float = Field(1e-3, gt=0.0)
    teacher_embedding_lr: float | None = Field(
        None, gt=0.0,
        description="η_T of the teacher's embedding tables online; None (the default): the student's embedding lr "
        "(optim.embedding_lr, fitted to the batch like the student's; the paper's 0.1 under optim: paper). The "
        "teacher was trained at that scale: a fixed 0.1 at batch 128 moved its rows ~30x too far per step and "
        "cost it 1.1 AUC points over the long-history stream.",
    )

    def teacher_embedding_lr_for(self, student_embedding_lr: float) -> float:
        """The teacher's online embedding lr: `teacher_embedding_lr` if set, else the student's."""
        return self.teacher_embedding_lr if self.teacher_embedding_lr is not None else student_embedding_lr
    drift: DriftSection = DriftSection()
    grow_vocabulary: bool = Field(
        False,
        description="Beyond the paper: ids in the online split beyond the tables (a newer vocabulary version, "
        "e.g. `crossadapt data prepare --append` with growth) grow the student's and the teacher's tables; new "
        "student rows start from the teacher's projected rows where it has the value. False: they read as "
        "<UNK>, as a model of the older vocabulary sees them.",
    )
    collaborative: CollaborativeConfig | None = Field(
        None,
        description="Beyond the paper (CrossAdapt-Collaborative): the teacher also distills from the student on the "
        "rows where the student knows more (weight, temperature, gate: crossadapt.transfer.online.collaborative). "
        "None: the teacher learns from the labels only, as in the paper. `{}` takes the defaults.",
    )


class OptimSection(_Section):
    """Concrete batch and learning rates (the paper's by default), as a training stage or service takes them."""

    batch_size: int = Field(PAPER_BATCH, ge=1)
    embedding_lr: float = Field(PAPER_EMBEDDING_LR, gt=0.0)
    dense_lr: float = Field(PAPER_DENSE_LR, gt=0.0)


class SwitchOptimSection(_Section):
    """The switch's `optim`: a preset ('data': fitted to the data's rows, the default; 'paper': batch 4096,
    lr 0.1 / 1e-3) and any values that override it. `optim: paper` is short for `{preset: paper}`.

    The switch resolves the left-out values once the data is open (crossadapt.transfer.optim_fit.choose_optim)
    and states the choice in its report.
    """

    preset: OptimPreset = "data"
    batch_size: int | None = Field(None, ge=1)
    embedding_lr: float | None = Field(None, gt=0.0)
    dense_lr: float | None = Field(None, gt=0.0)
    steps_per_epoch: int = Field(
        DEFAULT_STEPS_PER_EPOCH, ge=1,
        description="preset 'data': the fewest steps per epoch the student's offline rows (the sample) may get.",
    )

    @model_validator(mode="before")
    @classmethod
    def _preset_name(cls, value: Any) -> Any:
        return {"preset": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _steps_need_data(self) -> "SwitchOptimSection":
        if self.preset == "paper" and "steps_per_epoch" in self.model_fields_set:
            raise ValueError("optim.steps_per_epoch fits the batch to the data: it needs preset 'data'")
        return self

    def choose(self, *, basis_rows: int, basis: str) -> OptimChoice:
        return choose_optim(self.preset, basis_rows=basis_rows, basis=basis, batch_size=self.batch_size,
                            embedding_lr=self.embedding_lr, dense_lr=self.dense_lr,
                            steps_per_epoch=self.steps_per_epoch)


class AblationSection(_Section):
    """Switch single components off (paper Table 2); all on = CrossAdapt."""

    projection: bool = True
    progressive: bool = True
    sampling: bool = True
    offline_stage: bool = True
    co_evolution: bool = True
    asymmetry: bool = True
    adaptive_replay: bool = True
    online_stage: bool = True

    @model_validator(mode="after")
    def _some_stage(self) -> "AblationSection":
        if not self.offline_stage and not self.online_stage:
            raise ValueError("ablation cannot switch off both offline_stage and online_stage")
        return self


class BaselineSection(_Section):
    """Baselines trained alongside on the same splits; `epochs` is their pass count over their data."""

    epochs: int = Field(1, ge=1)


class SwitchConfig(_Section):
    """The whole switch: data → teacher → projection → sample → progressive KD → drift → co-distillation."""

    seed: int = 0
    device: str = "cpu"
    threads: int | None = Field(None, ge=1, description="torch intra-op threads; None keeps torch's default.")
    output_dir: Path = Path("runs/switch")
    data: DataSection
    teacher: TeacherSection = Field(default_factory=lambda: TeacherSection(train=TeacherTraining()))
    student: StudentSection = Field(default_factory=StudentSection)
    offline: OfflineSection = OfflineSection()
    online: OnlineSection = OnlineSection()
    optim: SwitchOptimSection = Field(
        default_factory=SwitchOptimSection,
        description="Batch and learning rates: 'data' (fitted to the rows, the default), 'paper', or values.",
    )
    ablation: AblationSection = AblationSection()
    adaptive_kd: AdaptiveKDConfig | None = Field(
        None,
        description="Beyond the paper: lower λ (and the replay share) while the student's LogLoss on fresh "
        "data beats the teacher's (CrossAdapt-Adaptive; see crossadapt.transfer.offline.adaptive). None: the "
        "paper's fixed λ. `{}` takes the defaults.",
    )
    baselines: list[str] = Field(default_factory=lambda: ["Scratch"])
    baseline_training: BaselineSection = BaselineSection()
    warm_start: WarmStartConfig | None = Field(
        None,
        description="Beyond the paper: the levels and source models of the CrossDomain-WarmStart comparison "
        "(crossadapt.transfer.warm_start; the source domain is the data's hist split), which runs when "
        "`baselines` names it (its defaults when this is None).",
    )

    @model_validator(mode="after")
    def _options_can_act(self) -> "SwitchConfig":
        """An option that a switched-off stage would silently ignore is an error."""
        sampling, drift, ablation = self.offline.sampling, self.online.drift, self.ablation
        if sampling.target == "conversion" or sampling.unclicked_ratio > 0:
            if not (ablation.offline_stage and ablation.sampling):
                raise ValueError("offline.sampling.target 'conversion' / unclicked_ratio need the offline stage "
                                 "and sampling (ablation.offline_stage and ablation.sampling true)")  # fmt: skip
            if self.data.dir is not None:
                columns = json.loads((self.data.dir / "dataset.json").read_text()).get("columns", [])
                if "conversion" not in columns:
                    raise ValueError(f"offline.sampling.target 'conversion': data.dir {str(self.data.dir)!r} "
                                     "has no conversion column")  # fmt: skip
        if self.warm_start is not None and "CrossDomain-WarmStart" not in self.baselines:
            raise ValueError("warm_start configures the CrossDomain-WarmStart comparison: add it to baselines")
        if self.online.collaborative is not None and not (ablation.online_stage and ablation.co_evolution):
            raise ValueError("online.collaborative trains the teacher from the student during co-distillation: it "
                             "needs ablation.online_stage and ablation.co_evolution true")  # fmt: skip
        if self.online.grow_vocabulary and not ablation.online_stage:
            raise ValueError("online.grow_vocabulary grows the tables during co-distillation: it needs "
                             "ablation.online_stage true")  # fmt: skip
        if drift.rolling and not (ablation.online_stage and ablation.adaptive_replay):
            raise ValueError("online.drift.rolling re-estimates the replay ratio: it needs ablation.online_stage "
                             "and ablation.adaptive_replay true")  # fmt: skip
        return self

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, value: list[str]) -> list[str]:
        unknown = [name for name in value if name not in BASELINE_NAMES + COMPARISON_NAMES]
        if unknown:
            raise ValueError(f"unknown baseline(s) {unknown}; choose from {list(BASELINE_NAMES + COMPARISON_NAMES)}")
        if len(set(value)) != len(value):
            raise ValueError(f"baselines repeat a name: {value}")
        return value


class ConfigError(ValueError):
    """A config file that cannot be read or validated; the message is one line naming the file and field."""


def format_validation_error(exc: ValidationError) -> str:
    """One line: `field.path: message; other.field: message`."""
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def parse_switch_config(raw: Any, *, source: str = "<config>") -> SwitchConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(raw).__name__}")
    try:
        return SwitchConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {format_validation_error(exc)}") from None


def load_switch_config(path: Path) -> SwitchConfig:
    """Read a YAML (or JSON) switch config; any problem is a `ConfigError` naming the file and field."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    try:
        raw = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        if isinstance(exc, json.JSONDecodeError):
            where = f" line {exc.lineno} column {exc.colno}"
        raise ConfigError(f"{path}:{where} not valid {'JSON' if str(path).endswith('.json') else 'YAML'}") from None
    return parse_switch_config(raw, source=str(path))
