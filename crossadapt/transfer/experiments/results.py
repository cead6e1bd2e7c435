"""Typed results of a switch run and of the paper benchmark (what `results.json` and `--json OUT` hold).

AUC is always a fraction in [0, 1] here; the Markdown tables show it in percent as the paper does.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from crossadapt.transfer.network_reuse import NetworkReuse
from crossadapt.transfer.optim_fit import OptimChoice

Role = Literal["teacher", "student", "baseline"]


class Score(BaseModel):
    """One model's test figures; `train_seconds` is training wall time (None for a reused teacher)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    role: Role
    auc: float
    logloss: float
    train_seconds: float | None = None


class Curve(BaseModel):
    """Prequential AUC (predict each online batch, then train on it) against training wall seconds."""

    model_config = ConfigDict(extra="forbid")

    name: str
    seconds: list[float]
    auc: list[float]


class DriftSummary(BaseModel):
    """Distribution shift of the training split (paper Eq. 13) and the replay ratio it implies (Eq. 14)."""

    model_config = ConfigDict(extra="forbid")

    metric: str
    shift: float
    replay_ratio: float
    theta_low: float
    theta_high: float
    per_feature: dict[str, float] = Field(description="Mean divergence over adjacent windows, per field.")


class RollingDriftSummary(BaseModel):
    """The stream's own Δ_shift estimate at the end of the online stage (`online.drift.rolling`)."""

    model_config = ConfigDict(extra="forbid")

    windows: int = Field(ge=0)
    rows: int = Field(ge=0)
    shift: float | None = None  # None: fewer windows than one estimate needs
    replay_ratio: float


class OnlineSummary(BaseModel):
    """What the online co-distillation did, the same from either path (in process or the co-distiller)."""

    model_config = ConfigDict(extra="forbid")

    rows: int = Field(ge=0, description="Stream rows the student trained on.")
    replay_rows: int = Field(ge=0, description="Training-pool rows replayed into the stream's batches.")
    teacher_updates: int = Field(ge=0)
    rolling_drift: RollingDriftSummary | None = None
    collaboration_share: float | None = Field(
        None, description="Collaborative teacher: the share of the stream where the student taught it.")

    @classmethod
    def from_details(cls, details: dict) -> OnlineSummary | None:
        """From a method's details (the in-process run's, or those the platform switch reads off the
        co-distiller's last student manifest); None if no online stage ran."""
        if details.get("online_rows") is None:
            return None
        return cls(rows=details["online_rows"], replay_rows=details.get("replay_rows") or 0,
                   teacher_updates=details.get("teacher_updates") or 0, rolling_drift=details.get("rolling_drift"),
                   collaboration_share=details.get("collaboration_share"))


class OperationTiming(BaseModel):
    """One long-running operation a platform switch ran (service, its id, wall seconds, final state)."""

    model_config = ConfigDict(extra="forbid")

    service: str
    kind: str
    operation_id: str
    seconds: float
    state: str = "SUCCEEDED"
    result: str = ""


class PromotionVerdict(BaseModel):
    """Whether the student should replace its teacher: only if its test AUC reaches the teacher's.

    ``rows_ci_pp``: 95% paired bootstrap interval over the test rows of student − teacher AUC (pp).
    """

    model_config = ConfigDict(extra="forbid")

    promote: bool
    delta_pp: float
    rows_ci_pp: tuple[float, float]
    reason: str

    @classmethod
    def judge(cls, delta_pp: float, rows_ci_pp: tuple[float, float]) -> "PromotionVerdict":
        low, high = rows_ci_pp
        ci = f"95% CI [{low:+.2f}, {high:+.2f}] over test rows"
        if delta_pp >= 0:
            beyond = "beyond test-row noise" if low > 0 else "within test-row noise of it"
            reason = (f"Promote: the student's test AUC reaches its teacher's ({delta_pp:+.2f} pp, {ci}; "
                      f"{beyond}).")
        else:
            beyond = ("below it beyond test-row noise" if high < 0
                      else "the interval includes 0, but the student has not shown it reaches the teacher")
            reason = (f"Do not promote: the student's test AUC is {-delta_pp:.2f} pp below its teacher's "
                      f"({ci}; {beyond}). Keep serving the teacher.")
        return cls(promote=delta_pp >= 0, delta_pp=delta_pp, rows_ci_pp=rows_ci_pp, reason=reason)


class SwitchResults(BaseModel):
    """Everything `crossadapt switch` measured; serialised as `results.json`."""

    model_config = ConfigDict(extra="forbid")

    teacher: Score
    student: Score
    baselines: list[Score] = []
    curves: list[Curve] = []
    drift: DriftSummary | None = None
    online: OnlineSummary | None = None  # the online stage's rows, replay, teacher updates and options
    stage_seconds: dict[str, float] = {}
    oracle_auc: float | None = None
    teacher_checkpoint: str
    student_checkpoint: str
    dataset: str
    ablation: dict[str, bool] = {}
    operations: list[OperationTiming] = []  # set when the stages ran through the platform's services
    platform: str | None = None  # where they ran: "local", or the services' address
    optim: OptimChoice | None = None  # batch and learning rates every stage trained with, and why
    verdict: PromotionVerdict | None = None  # promote the student or keep the teacher, and why
    network_reuse: NetworkReuse | None = None  # None: not asked for (or no offline stage, no projection)


class MethodStats(BaseModel):
    """Mean and spread of one method over seeds (the `methods[NAME]` object of the bench JSON)."""

    model_config = ConfigDict(extra="forbid")

    auc_mean: float
    auc_std: float
    logloss_mean: float
    logloss_std: float
    train_seconds_mean: float

    @classmethod
    def from_runs(cls, runs: "list[RunRecord]") -> "MethodStats":
        if not runs:
            raise ValueError("MethodStats.from_runs needs at least one run")
        auc = np.array([r.auc for r in runs], dtype=np.float64)
        loss = np.array([r.logloss for r in runs], dtype=np.float64)
        secs = np.array([r.train_seconds for r in runs], dtype=np.float64)
        return cls(
            auc_mean=float(auc.mean()),
            auc_std=_sample_std(auc),
            logloss_mean=float(loss.mean()),
            logloss_std=_sample_std(loss),
            train_seconds_mean=float(secs.mean()),
        )


def _sample_std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1) as papers report over seeds; 0.0 for a single seed."""
    return float(values.std(ddof=1)) if values.size > 1 else 0.0


class RunRecord(BaseModel):
    """One method, one seed, one teacher→student pair, one dataset."""

    model_config = ConfigDict(extra="forbid")

    setting: str
    teacher: str
    student: str
    method: str
    seed: int
    auc: float
    logloss: float
    train_seconds: float
    curve: Curve | None = None


class PairResult(BaseModel):
    """The bench JSON's `pairs[i]`: exactly teacher, student and methods."""

    model_config = ConfigDict(extra="forbid")

    teacher: str
    student: str
    methods: dict[str, MethodStats]


class BenchResults(BaseModel):
    """The bench JSON (`--json OUT`): exactly `oracle_auc` and `pairs`."""

    model_config = ConfigDict(extra="forbid")

    oracle_auc: float | None
    pairs: list[PairResult]


class SettingResults(BaseModel):
    """One dataset setting of the benchmark, with the detail the Markdown tables need."""

    model_config = ConfigDict(extra="forbid")

    name: str
    oracle_auc: float | None
    pairs: list[PairResult]
    teacher_scores: dict[str, MethodStats] = Field(
        default_factory=dict, description="Teacher test figures per teacher label (train_seconds_mean = teacher training)."
    )
    curves: list[Curve] = []
    deltas: list[PairDeltas] = Field(default_factory=list, description="Per pair: each method − Scratch, paired.")

    def schema_view(self) -> BenchResults:
        return BenchResults(oracle_auc=self.oracle_auc, pairs=self.pairs)


class PairedDelta(BaseModel):
    """``method`` − ``versus`` test AUC in points (pp), paired by seed and by test row.

    ``seed_ci_pp``: 95% t-interval of the per-seed deltas (None for one seed). ``rows_ci_pp``: 95%
    percentile interval of the mean delta over a paired bootstrap of the test rows (the same resamples
    for both methods and every seed; see `experiments.paired`).
    """

    model_config = ConfigDict(extra="forbid")

    method: str
    versus: str
    seeds: int
    delta_pp: float
    seed_ci_pp: tuple[float, float] | None
    rows_ci_pp: tuple[float, float]
    time_ratio: float | None = None  # method's training seconds / versus's (means over seeds)


class PairDeltas(BaseModel):
    """Paired deltas against Scratch of every method of one teacher→student pair."""

    model_config = ConfigDict(extra="forbid")

    teacher: str
    student: str
    deltas: list[PairedDelta]


class AblationRow(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    group: Literal["full", "offline", "online"]
    stats: MethodStats
    vs_scratch: PairedDelta | None = None


class WidthRow(BaseModel):
    """Table 3: one d_T → d_S scenario; each column is AUC stats over seeds."""

    model_config = ConfigDict(extra="forbid")

    teacher_dim: int
    student_dim: int
    teacher: MethodStats
    scratch: MethodStats
    without_projection: MethodStats
    with_projection: MethodStats
    vs_scratch: PairedDelta | None = None  # w/ ETP − Scratch
    # w/ ETP's student is the teacher's own network and started from it (offline.reuse_teacher_network)
    network_reused: bool = False


class PaperBenchResults(BaseModel):
    """Everything `crossadapt bench paper` produced; `main` is what goes to `--json OUT`."""

    model_config = ConfigDict(extra="forbid")

    preset: str
    main: SettingResults
    extra_settings: list[SettingResults] = []
    ablation: list[AblationRow] = []
    ablation_student: str | None = None
    widths: list[WidthRow] = []
    wall_seconds: float = 0.0
    degenerate_runs: list[str] = Field(
        default_factory=list, description="Runs (and teachers) whose test AUC is 0.5 ± 0.005: a constant predictor."
    )
