"""The request's settings, validated: `DistillationConfig` and `ModelSpec` (proto) → typed core configs.

The ranges and defaults are the core's (`crossadapt.transfer.switch_config.DistillationSection` and
`OptimSection`, the model zoo's `parse_model_config`), so the service accepts exactly what
`crossadapt switch` accepts; a bad value is INVALID_ARGUMENT naming the request field.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from google.protobuf.json_format import MessageToDict
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crossadapt.models.config import ModelConfig, parse_model_config
from crossadapt.transfer.offline.adaptive import AdaptiveKDConfig
from crossadapt.transfer.switch_config import DistillationSection, OfflineSection, OptimSection
from services.common.checks import adaptive_kd_config, validate
from services.common.errors import InvalidArgumentError

MAX_WORLD_SIZE = 64
_DISTILLATION_FIELDS = ("kd_weight", "temperature", "frozen_epochs", "joint_epochs", "kd_gate")
_OPTIM_FIELDS = ("batch_size", "dense_lr", "embedding_lr")


class DistillationSettings(BaseModel):
    """`DistillationConfig` with the core's ranges and defaults, plus the service's own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    distillation: DistillationSection = Field(default_factory=DistillationSection)
    optim: OptimSection = Field(default_factory=OptimSection)
    checkpoint_every_steps: int = Field(0, ge=0, description="0: a checkpoint at every epoch end.")
    world_size: int = Field(1, ge=1, le=MAX_WORLD_SIZE)
    seed: int = Field(0, ge=0)
    task_logit_shift: float = 0.0
    base_rate: float | None = Field(None, gt=0.0, lt=1.0)
    # the label trained on, as the switch's offline.sampling.target (pCVR: the sample's conversion column)
    target: Literal["click", "conversion"] = "click"
    # gap-driven λ, as the switch's adaptive_kd (None: the fixed kd_weight); needs the request's validation rows
    adaptive: AdaptiveKDConfig | None = None
    # as the switch's offline.reuse_teacher_network: a student of the teacher's own network starts from it
    reuse_teacher_network: bool = OfflineSection.model_fields["reuse_teacher_network"].default

    @classmethod
    def from_proto(cls, config: Any) -> DistillationSettings:
        """Validate a `crossadapt.v1.DistillationConfig`; unset fields take the core's defaults."""
        present = {descriptor.name: value for descriptor, value in config.ListFields()}
        if "adaptive" in present:
            present["adaptive"] = adaptive_kd_config(present["adaptive"], "config.adaptive")
        for name, value in present.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise InvalidArgumentError(f"must be a finite number, got {value}", field=f"config.{name}")
        raw = {
            "distillation": {k: present[k] for k in _DISTILLATION_FIELDS if k in present},
            "optim": {k: present[k] for k in _OPTIM_FIELDS if k in present},
            **{k: v for k, v in present.items() if k not in _DISTILLATION_FIELDS + _OPTIM_FIELDS},
        }
        return validate(cls, raw, prefix="config")


def student_model_config(spec: Any, projected_dim: int | None) -> ModelConfig:
    """The student's typed model config from a `crossadapt.v1.ModelSpec`.

    `embedding_dim` 0 takes the projected tables' width; `hidden` empty keeps the architecture's default;
    `options` are the architecture's other fields (an unknown one is INVALID_ARGUMENT).
    """
    if not spec.architecture:
        raise InvalidArgumentError("the student's architecture is required", field="student_model.architecture")
    options: dict[str, Any] = MessageToDict(spec.options) if spec.HasField("options") else {}
    for key in ("architecture", "embedding_dim", "hidden_units", "hidden"):
        if key in options:
            raise InvalidArgumentError(f"{key!r} belongs in its own ModelSpec field, not in options",
                                       field=f"student_model.options.{key}")
    raw: dict[str, Any] = {"architecture": spec.architecture, **options}
    if spec.embedding_dim:
        raw["embedding_dim"] = spec.embedding_dim
    elif projected_dim is not None:
        raw["embedding_dim"] = projected_dim
    if spec.hidden:
        raw["hidden_units"] = list(spec.hidden)
    try:
        config = parse_model_config(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [str(part) for part in error["loc"]]
        if loc and loc[0] == spec.architecture:  # the discriminated union's tag
            loc = loc[1:]
        where = {"hidden_units": "hidden", "embedding_dim": "embedding_dim"}.get(loc[0] if loc else "", None)
        field = f"student_model.{where}" if where else ".".join(["student_model", "options", *loc]) if loc \
            else "student_model.architecture"
        message = "unknown option" if error["type"] == "extra_forbidden" else error["msg"]
        raise InvalidArgumentError(f"{message} (architecture {spec.architecture!r})", field=field) from None
    if projected_dim is not None and config.embedding_dim != projected_dim:
        raise InvalidArgumentError(
            f"the student's embedding_dim {config.embedding_dim} differs from the projected tables' width "
            f"{projected_dim}; project to {config.embedding_dim} or leave embedding_dim 0",
            field="student_model.embedding_dim")
    return config
