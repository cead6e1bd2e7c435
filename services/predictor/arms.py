"""The two arms: a checkpoint's model with the encoder that turns raw request values into its input.

`ArmPair` is immutable: a request takes the pair once and uses it to the end, so a swap (a new
pair, one reference assignment) never changes the models under a request in flight. Arms that
share a vocabulary and fields share one encoder (and its index).
"""

from __future__ import annotations

import logging
import threading
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from crossadapt.data.missing import MISSING_SUFFIX
from crossadapt.data.vocabulary import Vocabulary, VocabularyRef
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


def model_numbers(raw: np.ndarray, log_transform: bool, negative_is_missing: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(``[B, N]`` float32 model input, ``[B, N]`` bool missing) of ``[N, B]`` raw numbers (NaN = missing):
    the training transform (`crossadapt.data.columns.numerical_with_missing`: float32, a missing value
    becomes 0, then log2(x) where x > 2) on all columns at once."""
    numbers = raw.T.astype(np.float32)
    missing = np.isnan(numbers)
    if negative_is_missing:
        missing |= numbers < 0
    numbers[missing] = 0.0
    if log_transform:
        big = numbers > 2
        numbers[big] = np.log2(numbers[big])
    return numbers, missing


class FeatureEncoder:
    """Raw values of a checkpoint's fields → its row ids (vocabulary) and transformed numbers.

    The model's numerical inputs are the request's numerical fields (`numerical`) and, for each field
    prepared with a missing indicator, ``<field>__missing`` (1.0 where the value is missing, else 0.0),
    derived here as `crossadapt.data.missing` prepares it: requests never carry indicators.
    """

    def __init__(self, vocabulary: Vocabulary, spec: FeatureSpec, log_transform: bool,
                 negative_is_missing: bool = False) -> None:
        self.categorical = tuple(f.name for f in spec.categorical)
        indicators = {n: n[: -len(MISSING_SUFFIX)] for n in spec.numerical if n.endswith(MISSING_SUFFIX)
                      and n[: -len(MISSING_SUFFIX)] in spec.numerical}
        self.numerical = tuple(n for n in spec.numerical if n not in indicators)
        self.missing_indicators = tuple(indicators.values())  # request fields with an indicator input
        # Where each model input comes from: value j of `numerical`, or the missing mask of that value.
        self._value_slots = np.array([i for i, n in enumerate(spec.numerical) if n not in indicators], np.int64)
        self._indicator_slots = np.array([i for i, n in enumerate(spec.numerical) if n in indicators], np.int64)
        self._indicator_sources = np.array([self.numerical.index(indicators[n]) for n in spec.numerical
                                            if n in indicators], np.int64)
        self._model_numerical = len(spec.numerical)
        self.log_transform = log_transform
        self.negative_is_missing = negative_is_missing
        self.vocabulary_version = vocabulary.version
        self.key = (vocabulary.hash, self.categorical, tuple(spec.numerical), log_transform, negative_is_missing)
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
        count = columns.rows if rows is None else len(rows)
        if self.categorical == columns.categorical_fields and rows is None:
            text = columns.categorical  # the usual case: the block as it came
        elif self.categorical:
            position = {f: i for i, f in enumerate(columns.categorical_fields)}
            wanted = np.arange(columns.rows) if rows is None else np.asarray(rows, np.int64)
            take = (np.array([position[f] for f in self.categorical], np.int64)[:, None] * columns.rows
                    + wanted[None, :]).ravel()
            text = columns.categorical.take(pa.array(take))
        categorical = (self.index.lookup_block(text, count) if self.categorical
                       else np.zeros((count, 0), np.int64))
        if self.numerical == columns.numerical_fields:
            raw = columns.numerical if rows is None else columns.numerical[:, rows]
        else:
            position = {f: i for i, f in enumerate(columns.numerical_fields)}
            picked = np.array([position[f] for f in self.numerical], np.int64)
            raw = columns.numerical[picked] if rows is None else columns.numerical[picked][:, rows]
        values, missing = model_numbers(raw, self.log_transform, self.negative_is_missing)
        if len(self._indicator_slots):
            numerical = np.empty((count, self._model_numerical), dtype=np.float32)
            numerical[:, self._value_slots] = values
            numerical[:, self._indicator_slots] = missing[:, self._indicator_sources]
        else:
            numerical = values
        unknown = (categorical == 0).sum(axis=1, dtype=np.int32)
        return EncodedBatch(categorical, numerical, unknown)

    def unknown_by_field(self, batch: EncodedBatch, rows: np.ndarray | None = None) -> dict[str, int]:
        """Values that went to the unknown row, per field (of the rows where the ``[B]`` bool `rows` is set)."""
        unknown = batch.categorical == 0
        counts = (unknown if rows is None else unknown & rows[:, None]).sum(axis=0)
        return {f: int(c) for f, c in zip(self.categorical, counts) if c}


@dataclass(frozen=True)
class LoadedArm:
    """One arm: its checkpoint, model (eval mode), encoder, and a generation that changes on every swap."""

    arm: int
    checkpoint: PublishedCheckpoint
    model: Any  # a crossadapt CTRModel
    encoder: FeatureEncoder
    generation: int
    forward: Any = None  # what scores: the model traced for serving (`serving_forward`), or None: the model

    @property
    def name(self) -> str:
        return ARM_NAMES[self.arm]

    @property
    def ref(self) -> str:
        return self.checkpoint.ref

    def score(self, batch: EncodedBatch) -> np.ndarray:
        """``[B]`` float32 click probabilities."""
        with torch.inference_mode():
            logits = (self.forward or self.model)(torch.from_numpy(batch.categorical), torch.from_numpy(batch.numerical))
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
        return RequestSchema(categorical, numerical, cohort_key, row_id_field, max_rows, self.missing_numerical())

    def missing_numerical(self) -> frozenset[str]:
        """Numerical request fields where null/NaN means missing: those an arm has a missing indicator for."""
        return frozenset(self.teacher.encoder.missing_indicators) | frozenset(self.student.encoder.missing_indicators)


def _union(first: tuple[str, ...], second: tuple[str, ...]) -> tuple[str, ...]:
    return first + tuple(f for f in second if f not in first)


def serving_forward(model: Any, spec: FeatureSpec, seed: int = 0) -> Any:
    """The model traced with TorchScript (the same parameters, without the Python overhead of its modules:
    about half of a batch-1 forward), or None when tracing fails or the traced forward differs from the
    model's on random inputs of batch sizes other than the traced one (e.g. a shape-dependent branch)."""
    generator = torch.Generator().manual_seed(seed)

    def inputs(rows: int) -> tuple[torch.Tensor, torch.Tensor]:
        sizes = torch.tensor([f.vocab_size for f in spec.categorical], dtype=torch.int64)
        ids = (torch.rand((rows, len(sizes)), generator=generator) * sizes).long()
        return ids, torch.randn((rows, len(spec.numerical)), generator=generator)

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TracerWarnings: the checks below decide
            traced = torch.jit.trace(model, inputs(8), check_trace=False)
        with torch.inference_mode():
            for rows in (1, 3, 64):
                example = inputs(rows)
                if not torch.allclose(traced(*example), model(*example), rtol=1e-5, atol=1e-6):
                    log.warning("traced model differs from the model; serving it untraced", extra={"rows": rows})
                    return None
    except Exception as exc:  # noqa: BLE001 - any model that does not trace is served as it is
        log.warning("model does not trace; serving it untraced: %s", exc)
        return None
    return traced


def named_version(vocabulary: Vocabulary, published: PublishedCheckpoint) -> Vocabulary:
    """The version of `vocabulary` the checkpoint names (manifest ``vocab_hash``, ``extra.vocab_version``).

    A checkpoint is normally published with exactly that version; one published with a newer version
    of the same vocabulary (a grown one) serves the prefix it was trained with, so values added later
    read as ``<UNK>`` as they did in training, and the ids always fit its tables."""
    named = published.manifest.vocab_hash
    if vocabulary.hash == named:
        return vocabulary
    number = published.manifest.extra.get("vocab_version")
    try:
        return vocabulary.resolve(VocabularyRef(version=int(number), hash=named) if number else named)
    except (ValueError, TypeError) as exc:
        raise FailedPreconditionError(f"{published.ref} names vocabulary {named[:12]} (version {number}), which its "
                                      f"published vocabulary does not hold: {exc}", field="vocabulary") from exc


class ArmLoader:
    """Loads checkpoints from the store into arms, sharing encoders between arms with the same vocabulary."""

    def __init__(self, checkpoints: CheckpointStore, trace: bool = True) -> None:
        self.checkpoints = checkpoints
        self.trace = trace
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
        vocabulary = named_version(vocabulary, published)
        preprocessing = published.manifest.extra.get("preprocessing") or {}
        log_transform = bool(preprocessing.get("log_transform", True))  # PrepareConfig's defaults
        negative_is_missing = preprocessing.get("negative_numerical", "keep") == "missing"
        key = (vocabulary.hash, tuple(f.name for f in published.manifest.feature_spec.categorical),
               tuple(published.manifest.feature_spec.numerical), log_transform, negative_is_missing)
        with self._lock:
            encoder = self._encoders.get(key)
        if encoder is None:
            encoder = FeatureEncoder(vocabulary, published.manifest.feature_spec, log_transform, negative_is_missing)
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
                                      "vocabulary_rows": len(encoder.index),
                                      "vocabulary_version": encoder.vocabulary_version})
        forward = serving_forward(model, published.manifest.feature_spec) if self.trace else None
        return LoadedArm(arm=arm, checkpoint=published, model=model, encoder=encoder, generation=generation,
                         forward=forward)

    def keep_only(self, pair: ArmPair) -> None:
        """Forget encoders no arm uses any more (their indexes can be large)."""
        used = {pair.teacher.encoder.key, pair.student.encoder.key}
        with self._lock:
            self._encoders = {k: v for k, v in self._encoders.items() if k in used}
