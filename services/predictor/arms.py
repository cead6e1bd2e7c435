"""The two arms: a checkpoint's model with the encoder that turns raw request values into its input.

`ArmPair` is immutable: a request takes the pair once and uses it to the end, so a swap (a new
pair, one reference assignment) never changes the models under a request in flight. Arms that
share a vocabulary and fields share one encoder (and its index).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models.spec import FeatureSpec
from services.common.errors import FailedPreconditionError, InvalidArgumentError
from services.common.model_io import load_model, load_vocabulary
from services.common.storage import CheckpointStore, PublishedCheckpoint
from services.predictor.features import RequestColumns, RequestSchema
from services.predictor.lookup import VocabularyIndex
from services.predictor.settings import CheckpointSpec

log = logging.getLogger(__name__)
TEACHER, STUDENT = 1, 2  # the values of crossadapt.v1.Arm
ARM_NAMES = {TEACHER: "teacher", STUDENT: "student"}


def other(arm: int) -> int:
    return STUDENT if arm == TEACHER else TEACHER


@dataclass(frozen=True)
class EncodedBatch:
    """Model input of some rows: ``categorical [B, C]`` ids, ``numerical [B, N]``, unknown values per row."""

    categorical: np.ndarray  # int64
    numerical: np.ndarray  # float32
    unknown: np.ndarray  # [B] int32: values that went to the unknown row (id 0)

    def rows(self, index: np.ndarray) -> EncodedBatch:
        return EncodedBatch(self.categorical[index], self.numerical[index], self.unknown[index])

    @staticmethod
    def concat(parts: list[EncodedBatch]) -> EncodedBatch:
        return EncodedBatch(np.concatenate([p.categorical for p in parts]),
                            np.concatenate([p.numerical for p in parts]), np.concatenate([p.unknown for p in parts]))


def model_numbers(columns: list[np.ndarray], rows: int, log_transform: bool) -> np.ndarray:
    """``[B, N]`` float32 model input of finite raw numbers: the training transform
    (`crossadapt.data.columns.numerical_values`: float32, then log2(x) where x > 2) on all columns at once."""
    numbers = np.empty((rows, len(columns)), dtype=np.float32)
    for index, column in enumerate(columns):
        numbers[:, index] = column
    if log_transform:
        big = numbers > 2
        numbers[big] = np.log2(numbers[big])
    return numbers


class FeatureEncoder:
    """Raw values of a checkpoint's fields → its row ids (vocabulary) and transformed numbers."""

    def __init__(self, vocabulary: Vocabulary, spec: FeatureSpec, log_transform: bool) -> None:
        self.categorical = tuple(f.name for f in spec.categorical)
        self.numerical = tuple(spec.numerical)
        self.log_transform = log_transform
        self.key = (vocabulary.hash, self.categorical, self.numerical, log_transform)
        for field in spec.categorical:
            if field.name not in vocabulary:
                raise FailedPreconditionError(f"the vocabulary has no field {field.name!r}", field=field.name)
            if vocabulary.size(field.name) > field.vocab_size:
                raise FailedPreconditionError(
                    f"the vocabulary has {vocabulary.size(field.name)} rows, the model's table {field.vocab_size}",
                    field=field.name)
        self.index = VocabularyIndex(vocabulary, self.categorical)

    def encode(self, columns: RequestColumns, rows: np.ndarray | None = None) -> EncodedBatch:
        """The model input of the request's rows (all, or those in ``rows``)."""
        take = None if rows is None else pa.array(rows)
        text = [columns.text[f] if take is None else columns.text[f].take(take) for f in self.categorical]
        count = columns.rows if rows is None else len(rows)
        categorical = self.index.lookup(text) if text else np.zeros((count, 0), np.int64)
        numerical = model_numbers([columns.numbers[n] if rows is None else columns.numbers[n][rows]
                                   for n in self.numerical], count, self.log_transform)
        unknown = (categorical == 0).sum(axis=1, dtype=np.int32)
        return EncodedBatch(categorical, numerical, unknown)

    def unknown_by_field(self, batch: EncodedBatch) -> dict[str, int]:
        counts = (batch.categorical == 0).sum(axis=0)
        return {f: int(c) for f, c in zip(self.categorical, counts) if c}


@dataclass(frozen=True)
class LoadedArm:
    """One arm: its checkpoint, model (eval mode), encoder, and a generation that changes on every swap."""

    arm: int
    checkpoint: PublishedCheckpoint
    model: Any  # a crossadapt CTRModel
    encoder: FeatureEncoder
    generation: int

    @property
    def name(self) -> str:
        return ARM_NAMES[self.arm]

    @property
    def ref(self) -> str:
        return self.checkpoint.ref

    def score(self, batch: EncodedBatch) -> np.ndarray:
        """``[B]`` float32 click probabilities."""
        with torch.inference_mode():
            logits = self.model(torch.from_numpy(batch.categorical), torch.from_numpy(batch.numerical))
            return torch.sigmoid(logits).numpy().astype(np.float32, copy=False)


@dataclass(frozen=True)
class ArmPair:
    teacher: LoadedArm
    student: LoadedArm

    def arm(self, code: int) -> LoadedArm:
        return self.teacher if code == TEACHER else self.student

    def with_arm(self, loaded: LoadedArm) -> ArmPair:
        return replace(self, **{loaded.name: loaded})

    def schema(self, cohort_key: str, row_id_field: str, max_rows: int) -> RequestSchema:
        """The request columns: the union of both arms' fields (teacher's order first)."""
        categorical = _union(self.teacher.encoder.categorical, self.student.encoder.categorical)
        numerical = _union(self.teacher.encoder.numerical, self.student.encoder.numerical)
        clash = sorted(set(categorical) & set(numerical))
        if clash:
            raise FailedPreconditionError("a field is categorical in one arm and numerical in the other",
                                          field=clash[0])
        return RequestSchema(categorical, numerical, cohort_key, row_id_field, max_rows)


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(f for f in second if f not in first)


class ArmLoader:
    """Loads checkpoints from the store into arms, sharing encoders between arms with the same vocabulary."""

    def __init__(self, checkpoints: CheckpointStore) -> None:
        self.checkpoints = checkpoints
        self._encoders: dict[tuple, FeatureEncoder] = {}
        self._lock = threading.Lock()  # loads run in worker threads
        self._generation = 0

    def load(self, arm: int, spec: CheckpointSpec) -> LoadedArm:
        """The checkpoint as an arm; NOT_FOUND if it does not exist, FAILED_PRECONDITION if it cannot serve."""
        if arm not in ARM_NAMES:
            raise InvalidArgumentError("arm must be ARM_TEACHER or ARM_STUDENT", field="arm")
        model, published = load_model(self.checkpoints, spec.name, spec.version)
        vocabulary = load_vocabulary(self.checkpoints, published)
        if vocabulary is None:
            raise FailedPreconditionError(f"{published.ref} was published without a vocabulary; "
                                          "raw feature values cannot be mapped to its rows", field="checkpoint")
        preprocessing = published.manifest.extra.get("preprocessing") or {}
        log_transform = bool(preprocessing.get("log_transform", True))  # PrepareConfig's default
        key = (vocabulary.hash, tuple(f.name for f in published.manifest.feature_spec.categorical),
               tuple(published.manifest.feature_spec.numerical), log_transform)
        with self._lock:
            encoder = self._encoders.get(key)
        if encoder is None:
            encoder = FeatureEncoder(vocabulary, published.manifest.feature_spec, log_transform)
            with self._lock:
                encoder = self._encoders.setdefault(key, encoder)
        model.eval()
        for embedding in model.embedding_modules():
            # Ids come from the vocabulary index (0..V-1, and V fits the table: checked above), so the
            # per-batch range check (two tensor reductions, ~0.1 ms a forward) guards nothing here.
            embedding.check_ids = False
        with self._lock:
            self._generation += 1
            generation = self._generation
        log.info("arm loaded", extra={"arm": ARM_NAMES[arm], "checkpoint": published.ref, "generation": generation,
                                      "vocabulary_rows": len(encoder.index)})
        return LoadedArm(arm=arm, checkpoint=published, model=model, encoder=encoder, generation=generation)

    def keep_only(self, pair: ArmPair) -> None:
        """Forget encoders no arm uses any more (their indexes can be large)."""
        used = {pair.teacher.encoder.key, pair.student.encoder.key}
        with self._lock:
            self._encoders = {k: v for k, v in self._encoders.items() if k in used}
