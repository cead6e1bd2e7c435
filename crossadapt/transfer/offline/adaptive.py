"""A teacher the student can outgrow: distillation weight (and replay share) driven by the measured gap.

Beyond the paper. With a fixed ``λ = 0.7`` the student keeps being pulled toward the teacher's errors even
after it has become the better model (a stronger architecture, fresher data). This controller watches the
two models' LogLoss on data neither was just trained on and lowers ``λ`` only when the student is clearly
better; while the teacher is better (or the gap is within noise) ``λ`` stays at ``λ_max``.

Formula (one observation = one pair of LogLosses ``ℓ_S, ℓ_T`` measured on the same rows)::

    L_S ← EMA(ℓ_S),  L_T ← EMA(ℓ_T)                 α = 2 / (W + 1), zero-started, bias-corrected:
                                                     L_t = m_t / (1 − (1 − α)^t), m_t = m_{t−1} + α(ℓ_t − m_{t−1})
    gap = (L_T − L_S) / L_T                          relative: > 0 means the student is better
    u   = clip((gap − gap_onset) / (gap_saturation − gap_onset), 0, 1)
    w   = 1 − u²(3 − 2u)                             smoothstep: flat at both ends, no kink
    λ*  = λ_floor + (λ_max − λ_floor) · w
    λ_t = λ_{t−1} + clip(α · (λ* − λ_{t−1}), −max_change, +max_change)   (λ_max until `warmup` observations)
    replay scale s_t = replay_floor + (1 − replay_floor) · w_t,  w_t = (λ_t − λ_floor)/(λ_max − λ_floor)

Why this is smooth and does not oscillate: the EMA low-pass filters the noisy per-batch losses, ``w`` is a
continuous, monotone function of the filtered gap with zero slope at both thresholds, ``λ`` itself follows
its target through a second first-order filter (same ``α``), and the rate limit bounds every move. There is
no switching logic, so there is nothing to chatter; the price is a time constant of about ``2W``
observations. The gap is relative (a fraction of the teacher's LogLoss) so one setting works for
datasets whose LogLoss is 0.45 (Criteo) or 0.14 (low-CTR data); the paper treats 0.001 absolute as
significant, i.e. roughly 0.2–0.7 % relative, hence ``gap_onset = 0.002``; ``λ`` reaches the floor at a
2 % lower LogLoss (``gap_saturation = 0.02``), a gap no noise produces. The ramp is wide and the online EMA
long (W = 100 batches) so that batch-to-batch noise moves ``λ`` by a few hundredths at most. Lower replay
follows ``λ`` because replayed history mainly feeds distillation (Eq. 15 "enhances distillation"); once
the student has outgrown the teacher, current data matters more.

Where the losses come from:
- online: each model's prequential LogLoss on stream batch ``B_t`` (predicted before training on it);
- offline: every ``offline_eval_every_steps`` steps, the LogLoss on a validation slice (the teacher is frozen
  offline, so its figure is computed once). The teacher has trained on all offline data, so on a slice of
  ``D_train`` it looks better than it is: the offline rule is conservative and rarely lowers ``λ``; pass the
  most recent rows available.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["AdaptiveSchedule", "AdaptiveKDConfig", "AdaptiveKDController", "smooth_weight"]


class AdaptiveSchedule(BaseModel):
    """How fast the controller reacts in one stage."""

    model_config = ConfigDict(extra="forbid")

    ema_window: int = Field(100, ge=1, description="W: EMA span in observations (α = 2/(W+1)).")
    warmup: int = Field(20, ge=0, description="Observations before λ may leave λ_max.")
    max_change: float = Field(0.01, gt=0.0, description="Largest move of λ per observation.")


class AdaptiveKDConfig(BaseModel):
    """Settings of the gap-driven distillation weight (see the module docstring for the formula)."""

    model_config = ConfigDict(extra="forbid")

    lambda_floor: float = Field(0.1, ge=0.0, description="λ when the student is clearly better (≤ λ_max).")
    gap_onset: float = Field(0.002, ge=0.0, description="Relative LogLoss gap where λ starts to fall.")
    gap_saturation: float = Field(0.02, gt=0.0, description="Relative gap where λ reaches the floor.")
    replay_floor: float = Field(0.5, ge=0.0, le=1.0, description="Replay ratio scale at λ_floor (1 = no change).")
    online: AdaptiveSchedule = AdaptiveSchedule(ema_window=100, warmup=20, max_change=0.01)
    offline: AdaptiveSchedule = AdaptiveSchedule(ema_window=2, warmup=1, max_change=0.2)
    offline_eval_every_steps: int = Field(100, ge=1, description="Offline: steps between validation checks.")
    offline_valid_rows: int = Field(65536, ge=1, description="Offline: rows of the validation slice used.")

    @model_validator(mode="after")
    def _thresholds_ordered(self) -> "AdaptiveKDConfig":
        if self.gap_saturation <= self.gap_onset:
            raise ValueError(
                f"gap_saturation ({self.gap_saturation}) must be greater than gap_onset ({self.gap_onset})"
            )
        return self


def smooth_weight(gap: float, onset: float, saturation: float) -> float:
    """``w(gap)`` in [0, 1]: 1 up to ``onset``, 0 from ``saturation``, smoothstep in between."""
    u = min(max((gap - onset) / (saturation - onset), 0.0), 1.0)
    return 1.0 - u * u * (3.0 - 2.0 * u)


class AdaptiveKDController:
    """Turns a stream of (student, teacher) LogLoss pairs into a distillation weight and a replay scale.

    Args:
        config: the thresholds.
        lambda_max: the stage's configured ``λ`` (what a fixed-λ run would use).
        stage: ``"online"`` or ``"offline"``, picks the :class:`AdaptiveSchedule`.

    Example::

        ctrl = AdaptiveKDController(AdaptiveKDConfig(), lambda_max=0.7, stage="online")
        for batch ...:
            weight = ctrl.observe(student_logloss, teacher_logloss)   # use `weight` for the next step
    """

    def __init__(self, config: AdaptiveKDConfig, lambda_max: float, stage: str = "online") -> None:
        if stage not in ("online", "offline"):
            raise ValueError(f"stage must be 'online' or 'offline', got {stage!r}")
        if lambda_max < 0:
            raise ValueError(f"lambda_max must be >= 0, got {lambda_max}")
        self.config = config
        self.schedule = config.online if stage == "online" else config.offline
        self.lambda_max = float(lambda_max)
        self.lambda_floor = min(config.lambda_floor, self.lambda_max)
        self._alpha = 2.0 / (self.schedule.ema_window + 1.0)
        self._student = 0.0  # zero-started EMAs, read through the bias correction in `observe`
        self._teacher = 0.0
        self.observations = 0
        self.kd_weight = self.lambda_max
        self.gap = 0.0
        self.history: list[tuple[int, float, float]] = []  # (observation, gap, λ) after each update

    @property
    def replay_scale(self) -> float:
        """Multiplier for the replay ratio: 1 at ``λ_max``, ``replay_floor`` at ``λ_floor``."""
        span = self.lambda_max - self.lambda_floor
        share = 1.0 if span <= 0 else (self.kd_weight - self.lambda_floor) / span
        floor = self.config.replay_floor
        return floor + (1.0 - floor) * share

    def observe(self, student_logloss: float, teacher_logloss: float) -> float:
        """Feed one measurement (LogLoss of each model on the same rows); returns the new ``λ``.

        Non-finite values are ignored (``λ`` unchanged), so a degenerate batch cannot derail the schedule.
        """
        if not (math.isfinite(student_logloss) and math.isfinite(teacher_logloss)):
            return self.kd_weight
        self._student += self._alpha * (student_logloss - self._student)
        self._teacher += self._alpha * (teacher_logloss - self._teacher)
        self.observations += 1
        # Bias correction (as in Adam): the zero-started EMA divided by its total weight. Early on this is
        # close to the plain mean of what was seen; an EMA seeded with the first value instead still held
        # 38% of that one batch after 48 more (α = 2/101), so one odd first batch hid a clear gap.
        debias = 1.0 - (1.0 - self._alpha) ** self.observations
        student, teacher = self._student / debias, self._teacher / debias
        self.gap = (teacher - student) / max(teacher, 1e-12)
        if self.observations > self.schedule.warmup:
            w = smooth_weight(self.gap, self.config.gap_onset, self.config.gap_saturation)
            target = self.lambda_floor + (self.lambda_max - self.lambda_floor) * w
            step = self._alpha * (target - self.kd_weight)
            step = min(max(step, -self.schedule.max_change), self.schedule.max_change)
            self.kd_weight = min(max(self.kd_weight + step, self.lambda_floor), self.lambda_max)
        self.history.append((self.observations, self.gap, self.kd_weight))
        return self.kd_weight

    def state_dict(self) -> dict[str, Any]:
        """The controller's state as plain numbers (the EMAs, the count, ``λ``, the gap and the history), so a
        loop that checkpoints it resumes with the same ``λ`` sequence as an uninterrupted run."""
        return {"student": self._student, "teacher": self._teacher, "observations": self.observations,
                "kd_weight": self.kd_weight, "gap": self.gap, "lambda_max": self.lambda_max,
                "history": [[int(obs), float(gap), float(weight)] for obs, gap, weight in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (on a controller built with the same config and ``λ_max``)."""
        if float(state["lambda_max"]) != self.lambda_max:
            raise ValueError(f"the saved controller had lambda_max {state['lambda_max']}, this one {self.lambda_max}")
        self._student, self._teacher = float(state["student"]), float(state["teacher"])
        self.observations = int(state["observations"])
        self.kd_weight, self.gap = float(state["kd_weight"]), float(state["gap"])
        self.history = [(int(obs), float(gap), float(weight)) for obs, gap, weight in state["history"]]
