"""The paper's baselines (Sec. 4.1.2): three without distillation and three classic KD methods.

How much data each sees follows Sec. 4.1.1-4.1.2 exactly. "Offline" = ``offline_epochs`` shuffled passes;
"stream" = one pass over ``D_online`` in time order, prequential figures recorded (as for CrossAdapt):

| method         | student init | offline data        | stream   | teacher                              |
|----------------|--------------|---------------------|----------|--------------------------------------|
| Scratch        | random       | D_train             | D_online | none                                 |
| Scratch-Online | random       | none                | D_online | none                                 |
| Full-Retrain   | random       | D_hist ∪ D_train    | D_online | none (the infeasible upper bound)    |
| Vanilla-KD     | random       | D_train (all of it) | D_online | BCE step every batch; student BCE + λ·KL_T |
| Hint-KD        | random       | D_train             | D_online | idem; student BCE + λ·MSE(W·e_S, e_T) |
| RKD            | random       | D_train             | D_online | idem; student BCE + λ·(w_d·RKD-D + w_a·RKD-A) |

No projection, no progressive phases, no strategic sampling, no replay for any of them. The KD baselines
update BOTH models on the data (``update_teacher=True``, the teacher steps on its BCE every batch, i.e.
τ = 1); they train a deep copy of the teacher, so the caller's teacher is untouched. ``student`` must be a
freshly built (randomly initialised) model; it is trained in place.

Hint-KD compares field embeddings (``hint_target="embedding"``: a learned ``Linear(D_S → D_T)`` applied to
each of the student's ``F`` field vectors, MSE against the teacher's ``[B, F, D_T]``) or penultimate layers
(``"hidden"``: ``Linear(H_S → H_T)``). The regressor trains with its own Adam at the dense lr. RKD compares
``forward_with_representation`` outputs on at most ``rkd_max_rows`` rows per batch (a fresh random subset
each step), so widths may differ and cost stays bounded.

Beyond the paper, two switch settings reach every baseline so that it competes with CrossAdapt on the same
terms (:class:`BaselineConfig`, filled by ``methods.run_baseline_method`` from the switch config or the
bench preset):

- ``grow_vocabulary`` (the switch's ``online.grow_vocabulary``): ids of a newer vocabulary version than the
  student's tables (the online split after ``data prepare --append`` with growth, whose thresholds and
  versions assigned those ids) grow the student's tables, and the KD teacher copy's, to the largest id per
  field, exactly as CrossAdapt's co-distillation grows them (``CoDistiller.fit_vocabulary``), so both end
  with the same vocabulary version. A baseline has no teacher projection: its new rows start from the
  initialiser (so a KD baseline refuses a teacher with more rows than its student, which the shared
  growth step would project). Off: such ids read as ``<UNK>``, as for CrossAdapt. Either way no id
  reaches a table that lacks it (in a fused table it would silently read another field's row). The test
  split is scored with the grown ids; ids newer still read as ``<UNK>``.
- ``target`` (the switch's ``offline.sampling.target``): ``"conversion"`` (pCVR) trains every stage on
  the clicked rows' conversions (``select_target_rows``, as CrossAdapt) and scores the test split's clicked
  rows on conversion.
"""

from __future__ import annotations

import abc
import copy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from crossadapt.data.batch import Batch
from crossadapt.data.growth import ids_for_sizes
from crossadapt.models.growth import table_sizes
from crossadapt.training import TrainConfig
from crossadapt.training.evaluate import MetricDict, evaluate_model, select_target_rows
from crossadapt.transfer.online.codistillation import CoDistiller, OnlineCoDistillConfig, OnlineCoDistillResult
from crossadapt.transfer.offline.distillation import DistillationTrainer, KDFeatures, StudentKDConfig, forward_with_features
from crossadapt.transfer.offline.losses import hint_mse, rkd_angle, rkd_distance, sample_rows
from crossadapt.transfer.online.teacher_schedule import AsymmetricTeacher

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays

__all__ = [
    "BASELINES",
    "BaselineConfig",
    "BaselineResult",
    "HintKDTrainer",
    "RKDTrainer",
    "run_baseline",
    "run_scratch",
    "run_scratch_online",
    "run_full_retrain",
    "run_vanilla_kd",
    "run_hint_kd",
    "run_rkd",
    "readable_by",
]

BaselineName = Literal["Scratch", "Scratch-Online", "Full-Retrain", "Vanilla-KD", "Hint-KD", "RKD"]
BASELINES: tuple[str, ...] = ("Scratch", "Scratch-Online", "Full-Retrain", "Vanilla-KD", "Hint-KD", "RKD")


class BaselineConfig(StudentKDConfig):
    """Settings shared by the baselines (paper defaults: λ = 0.7, T = 4, Adam 0.1 / 1e-3, batch 4096).

    ``kd_weight`` weighs each KD baseline's term; ``temperature`` is Vanilla-KD's.
    """

    offline_epochs: int = Field(1, ge=1, description="Shuffled passes over the offline data.")
    stream: bool = Field(True, description="Train on D_online after the offline stage (the paper's protocol).")
    update_teacher: bool = Field(True, description="KD baselines: the teacher steps on BCE every batch.")
    teacher_embedding_lr: float = Field(0.1, gt=0.0)
    teacher_dense_lr: float = Field(1e-3, gt=0.0)
    hint_target: KDFeatures = "embedding"
    rkd_distance_weight: float = Field(1.0, ge=0.0, description="Park et al. use 25:50 for distance:angle.")
    rkd_angle_weight: float = Field(2.0, ge=0.0)
    rkd_max_rows: int = Field(64, ge=2, description="Rows per batch RKD compares (m² pairs, m³ triplets).")
    window_batches: int = Field(10, ge=1, description="Batches per prequential window on the stream.")
    grow_vocabulary: bool = Field(
        False,
        description="Ids beyond the student's tables (a newer vocabulary version) grow its tables and the KD "
        "teacher copy's, as CrossAdapt's co-distillation does; new rows start from the initialiser (no teacher "
        "projection in a baseline). False: such ids read as <UNK>.",
    )
    target: Literal["click", "conversion"] = Field(
        "click", description="The label every stage fits and the test split is scored on: 'conversion' (pCVR) "
        "uses the clicked rows' conversions only.")

    def train_config(self, epochs: int = 1) -> TrainConfig:
        return self.student_train_config(epochs=epochs, target=self.target)

    def stream_config(self) -> OnlineCoDistillConfig:
        return OnlineCoDistillConfig(batch_size=self.batch_size, window_batches=self.window_batches,
                                     teacher_update_interval=1, seed=self.seed, device=self.device,
                                     num_threads=self.num_threads, grow_vocabulary=self.grow_vocabulary,
                                     target=self.target)


@dataclass
class BaselineResult:
    """``model`` trained in place; ``metrics`` on ``test`` ({} without one); ``seconds`` = offline + stream
    training wall time (evaluation excluded). ``online`` holds the stream's prequential record."""

    method: str
    model: nn.Module
    metrics: MetricDict
    seconds: float
    offline_seconds: float
    online: OnlineCoDistillResult | None
    teacher: nn.Module | None = None


# --------------------------------------------------------------------------- feature-KD trainers


class _FeatureKDTrainer(DistillationTrainer, abc.ABC):
    """A student step whose forward also yields the features a KD term compares (``student_features``).

    :meth:`forward` (the :class:`Trainer` hook) keeps them from the training forward itself;
    ``extra`` holds modules trained alongside (a regressor) with their own Adam.
    """

    def __init__(self, model: nn.Module, config: TrainConfig, features: KDFeatures, weight: float,
                 extra: nn.Module | None = None):
        super().__init__(model, config, kd_weight=0.0, temperature=1.0)
        self.teacher_features = features
        self.feature_weight = float(weight)
        self.student_features: torch.Tensor | None = None
        self.last_feature_loss: torch.Tensor | None = None  # the KD term of the latest step (detached)
        self.extra = extra.to(self.device) if extra is not None else None
        self.extra_optimizer = (torch.optim.Adam(self.extra.parameters(), lr=config.dense_lr)
                                if self.extra is not None else None)

    def forward(self, batch: Batch) -> torch.Tensor:
        logits, self.student_features = forward_with_features(self.model, batch, self.teacher_features)
        return logits

    def train_step(self, batch: Batch) -> torch.Tensor:
        if self.extra_optimizer is not None:
            self.extra_optimizer.zero_grad(set_to_none=True)
        loss = super().train_step(batch)
        if self.extra_optimizer is not None:
            self.extra_optimizer.step()
        self.student_features = None  # the autograd graph it holds is not needed past the step
        return loss

    @abc.abstractmethod
    def feature_loss(self) -> torch.Tensor:
        """The KD term comparing :attr:`student_features` with :attr:`teacher_context` (a scalar)."""

    def compute_loss(self, batch: Batch, logits: torch.Tensor) -> torch.Tensor:
        loss = super().compute_loss(batch, logits)
        if self.teacher_context is None or self.student_features is None:
            raise ValueError(f"{type(self).__name__} needs the teacher's {self.teacher_features} (teacher_context)")
        feature = self.feature_loss()
        self.last_feature_loss = feature.detach()
        return loss + self.feature_weight * feature


class HintKDTrainer(_FeatureKDTrainer):
    """Hint-KD (FitNets): BCE + λ · MSE(regressor(student features), teacher features)."""

    def __init__(self, model: nn.Module, config: TrainConfig, *, weight: float, student_width: int,
                 teacher_width: int, target: KDFeatures = "embedding"):
        super().__init__(model, config, target, weight, extra=nn.Linear(student_width, teacher_width))

    @property
    def regressor(self) -> nn.Linear:
        return self.extra

    def feature_loss(self) -> torch.Tensor:
        return hint_mse(self.regressor(self.student_features), self.teacher_context)


class RKDTrainer(_FeatureKDTrainer):
    """RKD: BCE + λ · (w_d · distance + w_a · angle) on a random subset of ``max_rows`` rows per batch."""

    def __init__(self, model: nn.Module, config: TrainConfig, *, weight: float, distance_weight: float,
                 angle_weight: float, max_rows: int, seed: int = 0):
        super().__init__(model, config, "hidden", weight)
        self.distance_weight, self.angle_weight, self.max_rows = distance_weight, angle_weight, max_rows
        self.generator = torch.Generator().manual_seed(seed)

    def feature_loss(self) -> torch.Tensor:
        rows = sample_rows(self.student_features.shape[0], self.max_rows, self.generator)
        s, t = self.student_features, self.teacher_context
        return (self.distance_weight * rkd_distance(s, t, rows=rows)
                + self.angle_weight * rkd_angle(s, t, rows=rows))


# --------------------------------------------------------------------------- runners


def readable_by(model: nn.Module, arrays: "SplitArrays") -> "SplitArrays":
    """``arrays`` as ``model`` reads them: ids beyond its (possibly grown) tables are ``<UNK>``."""
    sizes = np.asarray(table_sizes(model))
    if not len(arrays) or bool((arrays.categorical.max(axis=0) < sizes).all()):
        return arrays
    return replace(arrays, categorical=ids_for_sizes(arrays.categorical, sizes))


def _training_rows(distiller: CoDistiller, arrays: "SplitArrays", config: BaselineConfig) -> "SplitArrays":
    """Offline rows as the stream's are read: the models' tables fitted to their ids (grown, or newer ids as
    ``<UNK>``: :meth:`CoDistiller.fit_vocabulary`), then the target's rows (the clicked ones for pCVR)."""
    return select_target_rows(distiller.fit_vocabulary(arrays), config.target)


def _finish(method: str, distiller: CoDistiller, online: "SplitArrays | None", config: BaselineConfig,
            offline_seconds: float, test: "SplitArrays | None") -> BaselineResult:
    """Stream ``online`` (if the protocol says so), then score ``test`` on the target with the grown ids."""
    stream_result = None
    if config.stream and online is not None and len(online):
        distiller.consume(online)
        stream_result = distiller.finish()
    model = distiller.trainer.model
    metrics = evaluate_model(model, readable_by(model, test), target=config.target) if test is not None else {}
    seconds = offline_seconds + (stream_result.seconds if stream_result else 0.0)
    teacher = distiller.teacher.model if distiller.teacher is not None else None
    return BaselineResult(method, model, metrics, seconds, offline_seconds, stream_result, teacher)


def _scratch(method: str, student: nn.Module, offline: "SplitArrays | None", online: "SplitArrays | None",
             config: BaselineConfig, test: "SplitArrays | None") -> BaselineResult:
    trainer = DistillationTrainer(student, config.train_config(config.offline_epochs), kd_weight=0.0,
                                  temperature=1.0)
    distiller = CoDistiller(trainer, None, config.stream_config())
    offline_seconds = 0.0
    if offline is not None:
        offline_seconds = trainer.fit(_training_rows(distiller, offline, config)).seconds
    return _finish(method, distiller, online, config, offline_seconds, test)


def run_scratch(student: nn.Module, train: "SplitArrays", online: "SplitArrays | None",
                config: BaselineConfig | None = None, *, test: "SplitArrays | None" = None) -> BaselineResult:
    """Scratch: random init, trained on ``D_train`` then the stream ``D_online``."""
    return _scratch("Scratch", student, train, online, config or BaselineConfig(), test)


def run_scratch_online(student: nn.Module, online: "SplitArrays", config: BaselineConfig | None = None, *,
                       test: "SplitArrays | None" = None) -> BaselineResult:
    """Scratch-Online (the previous production model): random init, the stream ``D_online`` only."""
    config = (config or BaselineConfig()).model_copy(update={"stream": True})
    return _scratch("Scratch-Online", student, None, online, config, test)


def run_full_retrain(student: nn.Module, hist: "SplitArrays", train: "SplitArrays", online: "SplitArrays | None",
                     config: BaselineConfig | None = None, *, test: "SplitArrays | None" = None) -> BaselineResult:
    """Full-Retrain (upper bound): random init, trained on ``D_hist ∪ D_train`` then the stream."""
    from crossadapt.data import SplitArrays

    return _scratch("Full-Retrain", student, SplitArrays.concat([hist, train]), online,
                    config or BaselineConfig(), test)


def _kd(method: str, trainer: DistillationTrainer, teacher: nn.Module, train: "SplitArrays",
        online: "SplitArrays | None", config: BaselineConfig, test: "SplitArrays | None") -> BaselineResult:
    """Both models learn every batch (teacher on BCE, student on its KD loss): offline epochs, then stream."""
    teacher_rows, student_rows = table_sizes(teacher), table_sizes(trainer.model)
    if config.grow_vocabulary and any(t > s for t, s in zip(teacher_rows, student_rows)):
        raise ValueError(f"{method} with grow_vocabulary: the teacher's tables ({teacher_rows} rows per field) are "
                         f"larger than the student's ({student_rows}); growing would start the student's new rows "
                         "from the teacher's projected rows, which a baseline must not get. Build the student "
                         "with the teacher's vocabulary version (its feature spec)")
    teacher_copy = copy.deepcopy(teacher).to(trainer.device)
    asym = AsymmetricTeacher(teacher_copy, interval=1, optimizer="adam", embedding_lr=config.teacher_embedding_lr,
                             dense_lr=config.teacher_dense_lr, trainable=config.update_teacher)
    torch.manual_seed(config.seed)
    distiller = CoDistiller(trainer, asym, config.stream_config())
    offline_seconds = distiller.train_epochs(_training_rows(distiller, train, config), config.offline_epochs,
                                             seed=config.seed)
    return _finish(method, distiller, online, config, offline_seconds, test)


def run_vanilla_kd(teacher: nn.Module, student: nn.Module, train: "SplitArrays", online: "SplitArrays | None",
                   config: BaselineConfig | None = None, *, test: "SplitArrays | None" = None) -> BaselineResult:
    """Vanilla-KD (Hinton): student on BCE + λ · KL(p_T^T ‖ p_S^T) · T², teacher on BCE, every batch."""
    config = config or BaselineConfig()
    trainer = DistillationTrainer(student, config.train_config(), kd_weight=config.kd_weight,
                                  temperature=config.temperature, scale_kd_by_t2=config.scale_kd_by_t2,
                                  kd_loss="kl")
    return _kd("Vanilla-KD", trainer, teacher, train, online, config, test)


def _feature_width(model: nn.Module, target: KDFeatures, sample: "SplitArrays") -> int:
    """``D`` (embedding width) or ``H`` (penultimate width, measured on one row)."""
    if target == "embedding":
        return int(model.embedding.embedding_dim)
    batch = readable_by(model, sample.slice(0, 1)).to_batch()
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        _, hidden = model.forward_with_representation(batch.categorical.to(device), batch.numerical.to(device))
    model.train(was_training)
    return int(hidden.shape[-1])


def run_hint_kd(teacher: nn.Module, student: nn.Module, train: "SplitArrays", online: "SplitArrays | None",
                config: BaselineConfig | None = None, *, test: "SplitArrays | None" = None) -> BaselineResult:
    """Hint-KD: student on BCE + λ · MSE(W e_S, e_T) with a learned ``W`` (embedding or hidden widths)."""
    config = config or BaselineConfig()
    target = config.hint_target
    trainer = HintKDTrainer(student, config.train_config(), weight=config.kd_weight, target=target,
                            student_width=_feature_width(student, target, train),
                            teacher_width=_feature_width(teacher, target, train))
    return _kd("Hint-KD", trainer, teacher, train, online, config, test)


def run_rkd(teacher: nn.Module, student: nn.Module, train: "SplitArrays", online: "SplitArrays | None",
            config: BaselineConfig | None = None, *, test: "SplitArrays | None" = None) -> BaselineResult:
    """RKD: student on BCE + λ · (w_d · distance + w_a · angle) over penultimate representations."""
    config = config or BaselineConfig()
    trainer = RKDTrainer(student, config.train_config(), weight=config.kd_weight,
                         distance_weight=config.rkd_distance_weight, angle_weight=config.rkd_angle_weight,
                         max_rows=config.rkd_max_rows, seed=config.seed)
    return _kd("RKD", trainer, teacher, train, online, config, test)


def run_baseline(name: BaselineName, *, student: nn.Module, splits: "dict[str, SplitArrays]",
                 teacher: nn.Module | None = None, config: BaselineConfig | None = None) -> BaselineResult:
    """Dispatch by the paper's name. ``splits`` holds ``train``, ``online`` and, as needed, ``hist`` (for
    Full-Retrain) and ``test`` (scored if present)."""
    needed = {"Full-Retrain": ("hist", "train", "online"), "Scratch-Online": ("online",)}.get(name, ("train", "online"))
    missing = [key for key in needed if key not in splits]
    if missing:
        raise ValueError(f"baseline {name!r} needs splits {list(needed)}; missing {missing}")
    if name in ("Vanilla-KD", "Hint-KD", "RKD") and teacher is None:
        raise ValueError(f"baseline {name!r} needs the teacher")
    test = splits.get("test")
    if name == "Scratch":
        return run_scratch(student, splits["train"], splits["online"], config, test=test)
    if name == "Scratch-Online":
        return run_scratch_online(student, splits["online"], config, test=test)
    if name == "Full-Retrain":
        return run_full_retrain(student, splits["hist"], splits["train"], splits["online"], config, test=test)
    runners = {"Vanilla-KD": run_vanilla_kd, "Hint-KD": run_hint_kd, "RKD": run_rkd}
    if name not in runners:
        raise ValueError(f"unknown baseline {name!r}; choose from {list(BASELINES)}")
    return runners[name](teacher, student, splits["train"], splits["online"], config, test=test)
