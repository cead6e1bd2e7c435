"""Cross-domain warm start (CrossDomain-WarmStart): the related paper's three levels of transfer.

"Efficient Transfer Learning Framework for Cross-Domain CTR Prediction" (E-CDCTR) moves what a rich source
domain knows into a sparse target domain's CTR model at three levels, all implemented here:

(a) **Historical embeddings as features** (the paper's Tiny Pre-training Model, TPM): a small model
    (width ``tiny_dim``) is trained on the source rows; its tables of the fields the domains share
    (``embedding_fields``, default the user) become extra inputs of the target model. They are frozen
    (buffers, not parameters), standardised per dimension over the ids the source saw, and ``0`` (the
    mean) for ids the source never saw. The target model reads them as numerical fields named
    ``source_<field>_<k>`` (:class:`SourceEmbeddingFeatures` looks them up from the row's id, so the
    model takes the ordinary ``(categorical, numerical)`` inputs and scores any split as is).
(b) **The complete source model's parameters as the initialisation** (the Complete Pre-training Model,
    CPM): a model of the target's own architecture and inputs (with the level-(a) features when on) is
    trained on the most recent ``complete_share`` of the source rows ("short-term" data), and every
    parameter and buffer whose name and shape match is copied into the target model. Where shapes do
    NOT match (another architecture or width, another vocabulary size) the target keeps its own
    initialisation for that tensor and :class:`ParameterTransfer` lists it (``skipped``) with both shapes;
    nothing is cut or padded. The logit offset (the base-rate prior, a statistic of the domain) is set to
    the target's base rate after the copy.
(c) **Batch-norm statistics re-initialised for the target**: every BatchNorm's running mean / variance are
    reset (0 / 1, step count 0) and, when ``batch_norm_rows`` > 0, re-estimated as the exact average
    over that many of the target's training rows (a no-grad pass in train mode with cumulative
    momentum, dropout off), so the source domain's activation statistics never normalise target rows.
    Models without batch norm have nothing to reset (the report says so).

The target model then trains exactly as Scratch does (``D_train`` epochs, then the stream); only its
start differs. The paper pre-trains TPM and CPM asynchronously, once for many target updates; the bench
counts their time in the method's training time anyway (``stage_seconds`` separates them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from crossadapt.models.spec import FeatureSpec
from crossadapt.transfer.warm_start_config import WarmStartConfig

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays
    from crossadapt.models.config import ModelConfig

__all__ = [
    "WarmStartConfig",
    "SourceEmbeddingFeatures",
    "ParameterTransfer",
    "WarmStartResult",
    "historical_embeddings",
    "with_source_features",
    "copy_matching_parameters",
    "reset_batch_norm",
    "warm_start_model",
]


# -- (a) historical embeddings as features ------------------------------------------------------------------


def historical_embeddings(model: nn.Module, source: "SplitArrays", fields: list[str]) -> dict[str, torch.Tensor]:
    """``{field: [V, d]}``: ``model``'s table of each field, standardised per dimension over the ids that occur
    in ``source`` (each id once), with the rows of ids ``source`` never shows set to 0."""
    names = [f.name for f in model.embedding.spec.categorical]
    out = {}
    for name in fields:
        table = model.embedding.get_table(name).detach().float().cpu()
        seen = torch.zeros(table.shape[0], dtype=torch.bool)
        seen[torch.from_numpy(np.unique(source.categorical[:, names.index(name)]))] = True
        seen[0] = False  # <UNK> carries no history of its own
        if not bool(seen.any()):
            raise ValueError(f"the source rows show no value of field {name!r}")
        mean, std = table[seen].mean(0), table[seen].std(0, unbiased=False).clamp_min(1e-8)
        out[name] = torch.where(seen[:, None], (table - mean) / std, torch.zeros_like(table))
    return out


class SourceEmbeddingFeatures(nn.Module):
    """A CTR model whose numerical inputs are extended by frozen per-id source embeddings.

    ``model`` is built over :func:`source_feature_spec` (the data's fields plus ``d`` numerical fields per
    embedded field); ``tables`` maps a categorical field to its ``[V, d]`` source embeddings. The forward
    takes the data's own ``(categorical [B, C], numerical [B, N])`` and passes
    ``(categorical, [numerical, tables[f][categorical[:, f]] ...])`` to ``model``. The tables are buffers:
    they move with the model and are never trained.
    """

    def __init__(self, model: nn.Module, tables: dict[str, torch.Tensor]):
        super().__init__()
        self.model = model
        names = [f.name for f in model.embedding.spec.categorical]
        self.columns = [names.index(name) for name in tables]
        self.field_names = list(tables)
        for i, table in enumerate(tables.values()):
            self.register_buffer(f"source_table_{i}", table.detach().clone().float())

    @property
    def config(self) -> "ModelConfig":
        return self.model.config

    @property
    def spec(self) -> FeatureSpec:
        return self.model.spec

    @property
    def embedding(self) -> nn.Module:
        return self.model.embedding

    def source_features(self, categorical: torch.Tensor) -> torch.Tensor:
        """``[B, Σ d]`` the source embeddings of the rows' ids, field after field."""
        tables = [getattr(self, f"source_table_{i}") for i in range(len(self.columns))]
        return torch.cat([table[categorical[:, column]] for table, column in zip(tables, self.columns)], dim=1)

    def _inputs(self, categorical: torch.Tensor, numerical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        extra = self.source_features(categorical).to(numerical.dtype if numerical.is_floating_point() else torch.float32)
        return categorical, torch.cat([numerical.to(extra.dtype), extra], dim=1)

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        return self.model(*self._inputs(categorical, numerical))

    def forward_with_representation(self, categorical: torch.Tensor,
                                    numerical: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.forward_with_representation(*self._inputs(categorical, numerical))

    # the parameter groups of the wrapped CTRModel (the trainer's two learning rates)
    def embedding_parameters(self) -> list[nn.Parameter]:
        return self.model.embedding_parameters()

    def sparse_parameters(self) -> list[nn.Parameter]:
        return self.model.sparse_parameters()

    def set_sparse_gradients(self, sparse: bool) -> None:
        self.model.set_sparse_gradients(sparse)

    def freeze_embeddings(self, frozen: bool = True) -> None:
        self.model.freeze_embeddings(frozen)

    def set_base_rate(self, rate: float) -> None:
        self.model.set_base_rate(rate)


def source_feature_spec(spec: FeatureSpec, tables: dict[str, torch.Tensor]) -> FeatureSpec:
    """``spec`` plus the numerical fields ``source_<field>_<k>`` the source embeddings fill."""
    extra = tuple(f"source_{name}_{k}" for name, table in tables.items() for k in range(table.shape[1]))
    return FeatureSpec(categorical=spec.categorical, numerical=(*spec.numerical, *extra))


def with_source_features(config: "ModelConfig", spec: FeatureSpec, tables: dict[str, torch.Tensor] | None, *,
                         base_rate: float | None) -> nn.Module:
    """A freshly built model of ``config`` over the data's ``spec``, reading ``tables`` (None: no features)."""
    from crossadapt.models import build_model

    if not tables:
        return build_model(config, spec, base_rate=base_rate)
    return SourceEmbeddingFeatures(build_model(config, source_feature_spec(spec, tables), base_rate=base_rate), tables)


# -- (b) parameters as the initialisation -------------------------------------------------------------------


@dataclass
class ParameterTransfer:
    """What :func:`copy_matching_parameters` did: names copied, and ``(name, source shape, target shape)`` of
    the target tensors kept at their own initialisation (no same-shaped source tensor of that name)."""

    copied: list[str] = field(default_factory=list)
    skipped: list[tuple[str, tuple[int, ...], tuple[int, ...] | None]] = field(default_factory=list)


def copy_matching_parameters(source: nn.Module, target: nn.Module, *, exclude: tuple[str, ...] = ()) -> ParameterTransfer:
    """Copy every parameter and buffer of ``source`` into ``target`` where the name and shape match (exact copies).

    ``exclude``: name suffixes never copied (kept in the report as neither copied nor skipped)."""
    theirs = source.state_dict()
    report = ParameterTransfer()
    with torch.no_grad():
        for name, value in target.state_dict().items():
            if any(name.endswith(suffix) for suffix in exclude):
                continue
            other = theirs.get(name)
            if other is None or other.shape != value.shape:
                report.skipped.append((name, tuple(value.shape), None if other is None else tuple(other.shape)))
                continue
            value.copy_(other.to(value.device, value.dtype))
            report.copied.append(name)
    return report


# -- (c) batch-norm statistics for the target ---------------------------------------------------------------


def reset_batch_norm(model: nn.Module, rows: "SplitArrays | None" = None, batch_size: int = 4096) -> int:
    """Reset every BatchNorm's running statistics and, given ``rows``, re-estimate them as the exact average
    over those rows (cumulative momentum, no gradients, every other module in eval mode). Returns the
    number of BatchNorm layers (0: nothing to do)."""
    from crossadapt.data import iter_batches

    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for norm in norms:
        norm.reset_running_stats()
    if not norms or rows is None or not len(rows):
        return len(norms)
    was_training, momenta = model.training, [norm.momentum for norm in norms]
    device = next(model.parameters()).device
    model.eval()
    try:
        for norm in norms:
            norm.train()
            norm.momentum = None  # running stats = the plain average over the batches seen
        with torch.no_grad():
            for batch in iter_batches(rows, batch_size):
                model(batch.categorical.to(device), batch.numerical.to(device))
    finally:
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum
        model.train(was_training)
    return len(norms)


# -- the three levels together -------------------------------------------------------------------------------


@dataclass
class WarmStartResult:
    """The warm-started target model (untrained on the target) and what each level did."""

    model: nn.Module
    details: dict[str, Any]
    stage_seconds: dict[str, float]


def warm_start_model(student_config: "ModelConfig", spec: FeatureSpec, source: "SplitArrays",
                     target_train: "SplitArrays", config: WarmStartConfig, *, seed: int, batch_size: int,
                     embedding_lr: float, dense_lr: float, device: str = "cpu",
                     threads: int | None = None) -> WarmStartResult:
    """Levels (a)-(c) for a target model of ``student_config``: ``source`` are the source-domain rows (time
    order), ``target_train`` the target's training rows (its base rate, and the batch-norm re-estimation)."""
    from crossadapt.models.config import MLPConfig
    from crossadapt.training import TrainConfig, positive_rate, seed_everything
    from crossadapt.training.trainer import Trainer

    config.check_fields(spec)
    if not len(source):
        raise ValueError("a cross-domain warm start needs source-domain rows (the hist split)")
    details: dict[str, Any] = {"levels": {k: getattr(config, k) for k in ("embeddings", "parameters", "batch_norm")}}
    seconds: dict[str, float] = {}

    def train(model: nn.Module, rows: "SplitArrays", epochs: int) -> nn.Module:
        Trainer(model, TrainConfig(epochs=epochs, batch_size=batch_size, embedding_lr=embedding_lr, dense_lr=dense_lr,
                                   seed=seed, device=device, num_threads=threads, progress=False, patience=None,
                                   restore_best=False)).fit(rows)
        return model

    source_rate, target_rate = positive_rate(source), positive_rate(target_train)
    tables = None
    if config.embeddings:
        started = time.perf_counter()
        seed_everything(seed)
        tiny = MLPConfig(embedding_dim=config.tiny_dim, hidden_units=config.tiny_hidden_units)
        tiny_model = train(with_source_features(tiny, spec, None, base_rate=source_rate).to(device), source,
                           config.tiny_epochs)
        tables = historical_embeddings(tiny_model, source, config.embedding_fields)
        details["source_features"] = {name: int(t.shape[1]) for name, t in tables.items()}
        seconds["tiny_source_model"] = time.perf_counter() - started

    seed_everything(seed)
    model = with_source_features(student_config, spec, tables, base_rate=target_rate).to(device)
    if config.parameters:
        started = time.perf_counter()
        recent = source.slice(len(source) - max(1, int(round(config.complete_share * len(source)))), len(source))
        seed_everything(seed + 1)
        complete = train(with_source_features(student_config, spec, tables, base_rate=positive_rate(recent)).to(device),
                         recent, config.complete_epochs)
        transfer = copy_matching_parameters(complete, model, exclude=("logit_offset",))
        details["parameters"] = {"copied": len(transfer.copied), "skipped": [list(map(str, s)) for s in transfer.skipped],
                                 "complete_rows": len(recent)}
        seconds["complete_source_model"] = time.perf_counter() - started
    if config.batch_norm:
        started = time.perf_counter()
        rows = target_train.slice(0, min(config.batch_norm_rows, len(target_train))) if config.batch_norm_rows else None
        details["batch_norm_layers"] = reset_batch_norm(model, rows, batch_size=max(batch_size, 1024))
        seconds["batch_norm"] = time.perf_counter() - started
    return WarmStartResult(model=model, details=details, stage_seconds=seconds)
