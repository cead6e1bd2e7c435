"""StartDistillation's checks and the plan the task runs (stored in the operation record).

Everything that can be checked before a worker runs is checked here, from manifests and the
datasets' first partition: refs (NOT_FOUND), names, config ranges, the student's model config, the
projected tables' width and rows against the sample's fields, the vocabulary hashes of sample,
teacher and projected student, and whether the teacher can score a sample that carries no teacher
logits. Refs are pinned to concrete versions, so a redelivered task trains on the same inputs.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from crossadapt.models.spec import FeatureSpec
from services.common.checks import CheckpointPin, check_vocabularies, checked_name, dataset_schema, resolve_ref
from services.common.errors import FailedPreconditionError, InvalidArgumentError
from services.common.storage.checkpoints import CheckpointStore
from services.common.storage.datasets import DatasetStore
from services.common.storage.tables import NUMERICAL_TABLE, TableLayout, table_layouts
from services.offline_distiller.config import DistillationSettings, student_model_config

WIP_PREFIX = "wip/offline-distiller"
TEACHER_LOGIT = "teacher_logit"


class DistillationPlan(BaseModel):
    """What the task needs, fixed when the operation starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_id: str
    student_name: str
    student_version: str = ""  # claimed at Start; published into at the end
    projected: CheckpointPin
    teacher: CheckpointPin
    sample: str
    validation: str | None = None
    model: dict[str, Any]  # the student's ModelConfig (JSON)
    settings: DistillationSettings
    feature_spec: FeatureSpec
    vocab_hash: str
    sample_has_teacher_logits: bool
    validation_has_teacher_logits: bool = False

    @property
    def wip_name(self) -> str:
        """Where the work-in-progress checkpoints of this operation go (deleted when it ends)."""
        return f"{WIP_PREFIX}/{self.operation_id}"

    @property
    def needs_teacher_logits(self) -> bool:
        """The sample must be scored by the teacher (the core's condition: λ > 0, or adaptive λ)."""
        return not self.sample_has_teacher_logits and (self.settings.distillation.kd_weight > 0
                                                       or self.settings.adaptive is not None)

    @property
    def validation_needs_teacher_logits(self) -> bool:
        """Adaptive λ compares the student with the teacher on the validation rows: the teacher scores them."""
        return self.settings.adaptive is not None and not self.validation_has_teacher_logits


def check_tables(layouts: dict[str, TableLayout], projected_spec: FeatureSpec, spec: FeatureSpec) -> None:
    """Every projected table the student shares must have the student's rows for it."""
    vocab = {f.name: f.vocab_size for f in spec.categorical}
    for field, layout in layouts.items():
        if field in vocab and layout.rows != vocab[field]:
            raise InvalidArgumentError(
                f"projected table {field!r} has {layout.rows} rows, the sample's field has {vocab[field]} values",
                field=f"student.tables.{field}")
    if NUMERICAL_TABLE in layouts and layouts[NUMERICAL_TABLE].rows != len(projected_spec.numerical):
        raise InvalidArgumentError(
            f"projected table {NUMERICAL_TABLE!r} has {layouts[NUMERICAL_TABLE].rows} rows for "
            f"{len(projected_spec.numerical)} numerical fields", field=f"student.tables.{NUMERICAL_TABLE}")


def plan_distillation(checkpoints: CheckpointStore, datasets: DatasetStore, request: Any,
                      operation_id: str) -> DistillationPlan:
    """Validate a `StartDistillationRequest`; errors name the request field at fault."""
    student_name = checked_name(request.student_name, "student_name")
    settings = DistillationSettings.from_proto(request.config)
    projected = resolve_ref(checkpoints, request.student, "student")
    try:
        layouts = table_layouts(projected.manifest, projected.ref)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"{exc.message} (the student must be the projector's output)",
                                   field="student") from None
    widths = sorted({layout.dim for layout in layouts.values()})
    if len(widths) != 1:
        raise InvalidArgumentError(f"{projected.ref} has tables of widths {widths}; a student has one width",
                                   field="student")
    model = student_model_config(request.student_model, widths[0])
    teacher = resolve_ref(checkpoints, request.teacher, "teacher")
    spec, sample_vocab, columns = dataset_schema(datasets, request.sample.name, "sample")
    if request.sample.HasField("position"):
        raise InvalidArgumentError("the whole sample is distilled; a position is not accepted", field="sample.position")
    validation, valid_columns = None, []
    if request.validation.name:
        validation = request.validation.name
        valid_spec, valid_vocab, valid_columns = dataset_schema(datasets, validation, "validation")
        if valid_spec != spec:
            raise InvalidArgumentError("the validation rows have other fields than the sample", field="validation")
        check_vocabularies({"sample": sample_vocab, "validation": valid_vocab})
        if settings.target == "conversion" and "conversion" not in valid_columns:
            raise InvalidArgumentError(f"target 'conversion': validation {validation!r} has no conversion column",
                                       field="validation")
    if settings.adaptive is not None and validation is None:
        raise InvalidArgumentError("config.adaptive (gap-driven λ) compares student and teacher on validation rows; "
                                   "name them in validation (`crossadapt switch` uses the training split)",
                                   field="validation")
    vocab_hash = check_vocabularies({"sample": sample_vocab, "teacher": teacher.manifest.vocab_hash,
                                     "student": projected.manifest.vocab_hash})
    check_tables(layouts, projected.manifest.feature_spec, spec)
    if settings.target == "conversion" and "conversion" not in columns:
        raise InvalidArgumentError(f"target 'conversion': sample {request.sample.name!r} has no conversion column",
                                   field="config.target")
    plan = DistillationPlan(
        operation_id=operation_id, student_name=student_name,
        projected=CheckpointPin(name=projected.name, version=projected.version),
        teacher=CheckpointPin(name=teacher.name, version=teacher.version),
        sample=request.sample.name, validation=validation, model=model.model_dump(mode="json"), settings=settings,
        feature_spec=spec, vocab_hash=vocab_hash, sample_has_teacher_logits=TEACHER_LOGIT in columns,
        validation_has_teacher_logits=TEACHER_LOGIT in valid_columns,
    )
    scored = [what for what, needs in (("the sample", plan.needs_teacher_logits),
                                       ("adaptive λ's validation rows", plan.validation_needs_teacher_logits))
              if needs]
    if scored:
        if "model.safetensors" not in teacher.manifest.files:
            raise FailedPreconditionError(
                f"{' and '.join(scored)} have no {TEACHER_LOGIT} column and {teacher.ref} holds no model to "
                "score them", field="teacher")
        if teacher.manifest.feature_spec != spec:
            raise InvalidArgumentError(f"{teacher.ref} reads other fields than the sample, so it cannot score it",
                                       field="teacher")
    return plan

