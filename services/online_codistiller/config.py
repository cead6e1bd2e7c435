"""`CoDistillationConfig` (proto) validated into the core's sections, with the core's ranges and defaults.

    teacher_update_interval, teacher_dense_lr, drift.*, grow_vocabulary → OnlineSection (drift: DriftSection,
                                                          drift.rolling / drift.window_rows included)
    teacher_embedding_lr                                → OnlineSection.teacher_embedding_lr (unset: the
                                                          student's embedding_lr, as in process)
    collaborative                                       → OnlineSection.collaborative (the core's
                                                          CollaborativeConfig; absent: the paper's teacher)
    batch_size, dense_lr, embedding_lr                  → OptimSection
    kd_weight, temperature, kd_gate                     → DistillationSection (kd_gate unset: the switch's
                                                          default 'teacher_better')
    adaptive                                            → the core's AdaptiveKDConfig (absent: fixed λ)
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from crossadapt.transfer.online.config import OnlineCoDistillConfig
from crossadapt.transfer.drift.detector import DriftConfig
from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
from crossadapt.transfer.online.replay import ReplayConfig
from crossadapt.transfer.switch_config import DistillationSection, OnlineSection, OptimSection
from services.common.checks import adaptive_kd_config, validate
from services.common.errors import InvalidArgumentError

# proto field → (section, core field)
_MAPPING = {
    "teacher_update_interval": ("online", "teacher_update_interval"),
    "teacher_dense_lr": ("online", "teacher_lr"),
    "teacher_embedding_lr": ("online", "teacher_embedding_lr"),
    "grow_vocabulary": ("online", "grow_vocabulary"),
    "batch_size": ("optim", "batch_size"),
    "dense_lr": ("optim", "dense_lr"),
    "embedding_lr": ("optim", "embedding_lr"),
    "kd_weight": ("distillation", "kd_weight"),
    "temperature": ("distillation", "temperature"),
    "kd_gate": ("distillation", "kd_gate"),
}
_DRIFT = {"metric": "metric", "windows": "windows", "bins": "bins", "low": "theta_low", "high": "theta_high",
          "max_replay": "max_replay", "rolling": "rolling", "window_rows": "window_rows"}
_COLLABORATIVE = ("weight", "temperature", "gate", "scale_by_t2")  # proto names = CollaborativeConfig's
_RENAME = {
    **{(section, core): name for name, (section, core) in _MAPPING.items()},
    **{("online", "drift", core): f"drift.{name}" for name, core in _DRIFT.items()},
    ("online", "drift"): "drift",
    **{("online", "collaborative", name): f"collaborative.{name}" for name in _COLLABORATIVE},
    ("online", "collaborative"): "collaborative",
}


class CoDistillationSettings(BaseModel):
    """The co-distillation's settings; unset request fields keep the core's defaults (the paper's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    online: OnlineSection = Field(default_factory=OnlineSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    distillation: DistillationSection = Field(default_factory=DistillationSection)
    # Checkpoints follow the clock by default (pipeline.checkpoint_due): what a lost worker repeats is bounded
    # in time, and the cost of a checkpoint (a demo student: ~115 MB, ~2 s) stays a few percent of the run
    # whatever a batch costs. A batch cadence (also, whichever comes first) was 100 by default: on the demo that
    # meant a checkpoint every ~8 s of training and a fifth of the co-distiller's time spent publishing.
    checkpoint_every_batches: int | None = Field(None, ge=1)
    checkpoint_every_seconds: float = Field(60.0, gt=0.0)
    seed: int = Field(0, ge=0)
    window_batches: int = Field(10, ge=1)
    projection_seed: int | None = Field(None, ge=0, description="Projection of grown rows; None: `seed`.")
    target: Literal["click", "conversion"] = "click"
    adaptive: AdaptiveKDConfig | None = None  # gap-driven λ (the switch's adaptive_kd); None: the fixed kd_weight

    @classmethod
    def from_proto(cls, config: Any) -> CoDistillationSettings:
        present = {descriptor.name: value for descriptor, value in config.ListFields()}
        if "adaptive" in present:
            present["adaptive"] = adaptive_kd_config(present["adaptive"], "config.adaptive")
        drift = {descriptor.name: value for descriptor, value in config.drift.ListFields()} \
            if config.HasField("drift") else {}
        # Present (even empty: the core's defaults, as the switch's `online.collaborative: {}`) or absent.
        collaborative = {descriptor.name: value for descriptor, value in present.pop("collaborative").ListFields()} \
            if "collaborative" in present else None
        for name, value in [*present.items(), *((f"drift.{k}", v) for k, v in drift.items()),
                            *((f"collaborative.{k}", v) for k, v in (collaborative or {}).items())]:
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidArgumentError(f"must be a finite number, got {value}", field=f"config.{name}")
        raw: dict[str, Any] = {"online": {}, "optim": {}, "distillation": {}}
        for name, value in present.items():
            if name in _MAPPING:
                section, core = _MAPPING[name]
                raw[section][core] = value
            elif name != "drift":
                raw[name] = value
        if drift:
            raw["online"]["drift"] = {_DRIFT[name]: value for name, value in drift.items()}
        if collaborative is not None:
            raw["online"]["collaborative"] = collaborative
        return validate(cls, raw, prefix="config", rename=_RENAME)

    def core_config(self, device: str, num_threads: int | None = None) -> OnlineCoDistillConfig:
        return OnlineCoDistillConfig(
            batch_size=self.optim.batch_size, kd_weight=self.distillation.kd_weight,
            temperature=self.distillation.temperature, kd_gate=self.distillation.kd_gate,
            teacher_update_interval=self.online.teacher_update_interval,
            teacher_dense_lr=self.online.teacher_lr,
            teacher_embedding_lr=self.online.teacher_embedding_lr_for(self.optim.embedding_lr),
            embedding_lr=self.optim.embedding_lr, dense_lr=self.optim.dense_lr, seed=self.seed, device=device,
            num_threads=num_threads, window_batches=self.window_batches,
            grow_vocabulary=self.online.grow_vocabulary, target=self.target,
            projection_seed=self.seed if self.projection_seed is None else self.projection_seed,
            adaptive=self.adaptive, collaborative=self.online.collaborative,
        )

    def replay_config(self) -> ReplayConfig:
        """The replay controller's settings, as the in-process switch builds them (methods._measure_replay)."""
        drift = self.online.drift
        return ReplayConfig(theta_low=drift.theta_low, theta_high=drift.theta_high, max_ratio=drift.max_replay,
                            drift=DriftConfig(metric=drift.metric, windows=drift.windows, bins=drift.bins),
                            rolling=drift.rolling, window_rows=drift.window_rows)
