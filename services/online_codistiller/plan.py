"""StartCoDistillation's checks and the plan the task runs (stored in the operation record).

Checked before any worker runs: refs (NOT_FOUND), that student and teacher hold models
(FAILED_PRECONDITION), names, config ranges, that the stream's and the replay pool's first
partitions have the models' fields and, for target 'conversion', that the stream has a conversion
column (INVALID_ARGUMENT), and that every vocabulary hash agrees. A later
stream partition with another schema fails the running operation, naming the partition.

With `grow_vocabulary` the stream may be of a newer version of the models' vocabulary: the same
fields with at least the models' rows per field (`grows_from`), its own hash; the models' tables grow
to each partition's version as the stream reaches it (services.online_codistiller.pipeline).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

from crossadapt.models.spec import FeatureSpec
from services.common.checks import CheckpointPin, check_vocabularies, checked_name, dataset_schema, resolve_ref
from services.common.errors import FailedPreconditionError, InvalidArgumentError
from services.common.storage.checkpoints import CheckpointStore, PublishedCheckpoint
from services.common.storage.datasets import DatasetPosition, DatasetStore, partition_start
from services.online_codistiller.config import CoDistillationSettings


class CoDistillationPlan(BaseModel):
    """What the task needs, fixed when the operation starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operation_id: str
    student: CheckpointPin
    teacher: CheckpointPin
    student_name: str
    teacher_name: str
    stream: str
    start: DatasetPosition | None = None
    replay: str | None = None
    follow: bool = False
    settings: CoDistillationSettings
    feature_spec: FeatureSpec
    vocab_hash: str


def _model(published: PublishedCheckpoint, field: str) -> PublishedCheckpoint:
    if "model.safetensors" not in published.manifest.files:
        raise FailedPreconditionError(
            f"{published.ref} holds no model (architecture {published.manifest.architecture!r})", field=field)
    return published


def grows_from(tables: FeatureSpec, data: FeatureSpec) -> bool:
    """Whether `data` is of the same fields as `tables` with at least as many rows per field (a newer
    version of a growing vocabulary, or the same)."""
    return ([f.name for f in data.categorical] == [f.name for f in tables.categorical]
            and data.numerical == tables.numerical
            and all(d.vocab_size >= t.vocab_size for d, t in zip(data.categorical, tables.categorical, strict=True)))


def _start(ref: Any) -> DatasetPosition | None:
    if not ref.HasField("position"):
        return None
    position = ref.position
    if position.row < 0:
        raise InvalidArgumentError(f"row must be >= 0, got {position.row}", field="stream.position.row")
    if position.partition:
        try:
            partition_start(position.partition)
        except InvalidArgumentError as exc:
            raise InvalidArgumentError(exc.message, field="stream.position.partition") from None
    elif position.row:
        raise InvalidArgumentError("a row needs its partition", field="stream.position.partition")
    return DatasetPosition(partition=position.partition or None, row=position.row)


def plan_codistillation(checkpoints: CheckpointStore, datasets: DatasetStore, request: Any,
                        operation_id: str) -> CoDistillationPlan:
    """Validate a `StartCoDistillationRequest`; errors name the request field at fault."""
    settings = CoDistillationSettings.from_proto(request.config)
    student = _model(resolve_ref(checkpoints, request.student, "student"), "student")
    teacher = _model(resolve_ref(checkpoints, request.teacher, "teacher"), "teacher")
    student_name = checked_name(request.student_name or student.name, "student_name")
    teacher_name = checked_name(request.teacher_name or teacher.name, "teacher_name")
    if student_name == teacher_name:
        raise InvalidArgumentError(f"student and teacher would both be published as {student_name!r}",
                                   field="teacher_name")
    if student.manifest.feature_spec != teacher.manifest.feature_spec:
        raise InvalidArgumentError(f"{student.ref} and {teacher.ref} read different fields", field="teacher")
    spec = student.manifest.feature_spec
    start = _start(request.stream)
    stream_spec, stream_vocab, stream_columns = dataset_schema(datasets, request.stream.name, "stream")
    if settings.target == "conversion" and "conversion" not in stream_columns:
        raise InvalidArgumentError(f"target 'conversion': stream {request.stream.name!r} has no conversion column",
                                   field="config.target")
    hashes = {"student": student.manifest.vocab_hash, "teacher": teacher.manifest.vocab_hash}
    if stream_spec == spec:
        hashes["stream"] = stream_vocab
    elif not (settings.online.grow_vocabulary and grows_from(spec, stream_spec)):
        hint = " (a newer vocabulary version needs config.grow_vocabulary)" if grows_from(spec, stream_spec) else ""
        raise InvalidArgumentError(f"the stream's fields differ from those {student.ref} reads{hint}", field="stream")
    replay = None
    if request.replay.name:
        replay = request.replay.name
        replay_spec, hashes["replay"], _ = dataset_schema(datasets, replay, "replay")
        if replay_spec != spec:
            raise InvalidArgumentError(f"the replay pool's fields differ from those {student.ref} reads",
                                       field="replay")
    vocab_hash = check_vocabularies(hashes)
    return CoDistillationPlan(
        operation_id=operation_id, student=CheckpointPin(name=student.name, version=student.version),
        teacher=CheckpointPin(name=teacher.name, version=teacher.version), student_name=student_name,
        teacher_name=teacher_name, stream=request.stream.name, start=start, replay=replay, follow=request.follow,
        settings=settings, feature_spec=spec, vocab_hash=vocab_hash,
    )
