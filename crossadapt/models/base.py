"""The interface every CTR model implements: fused embedding lookup, then an interaction network.

Symbols: ``B`` batch, ``C`` categorical fields, ``N`` numerical fields, ``F = C + N``, ``D`` width,
``H`` width of the representation (the features the final scoring layer reads).
"""

from __future__ import annotations

import abc
from typing import ClassVar

import torch
from torch import nn

from crossadapt.models.config import ModelConfig
from crossadapt.models.layers.embedding import FeatureEmbedding
from crossadapt.models.spec import FeatureSpec


class CTRModel(nn.Module, abc.ABC):
    """Base class: ``logits = interaction(embedding(categorical, numerical))``.

    Subclasses build their layers in ``__init__`` (after calling ``super().__init__``) and implement
    :meth:`interact`. Parameter groups: every :class:`FeatureEmbedding` in the model (the main
    ``[*, D]`` tables and any width-1 first-order tables) is an *embedding* parameter; everything else is
    an *interaction* parameter. Dense layers are initialised as FuxiCTR does (Xavier-normal weights, zero
    biases); embeddings as in :class:`FeatureEmbedding`; all draws come from the global torch RNG, so
    ``torch.manual_seed(s)`` before :func:`~crossadapt.models.registry.build_model` is reproducible.

    Attributes:
        config: the validated architecture config.
        spec: the input layout.
        embedding: the ``[B, F, D]`` field embedding (the table projection reads and writes).
    """

    architecture: ClassVar[str]

    def __init__(self, config: ModelConfig, spec: FeatureSpec, *, sparse: bool = False):
        super().__init__()
        if config.architecture != self.architecture:
            raise ValueError(
                f"{type(self).__name__} needs an {self.architecture!r} config, got {config.architecture!r}"
            )
        if spec.num_fields < 1:
            raise ValueError("the feature spec has no fields")
        self.config = config
        self.spec = spec
        self.embedding = FeatureEmbedding(spec, config.embedding_dim, init_std=config.embedding_init_std, sparse=sparse)
        # A fixed offset added to every logit: the log-odds of the label's base rate (0 = p 0.5 until
        # set_base_rate). See set_base_rate for why it matters.
        self.register_buffer("logit_offset", torch.zeros(()))

    @property
    def num_fields(self) -> int:
        return self.spec.num_fields

    @abc.abstractmethod
    def interact(
        self, fields: torch.Tensor, categorical: torch.Tensor, numerical: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``fields [B, F, D]`` (+ raw inputs, for first-order terms) -> ``(logits [B], representation [B, H])``."""

    def forward(self, categorical: torch.Tensor, numerical: torch.Tensor) -> torch.Tensor:
        """``categorical [B, C]`` int ids, ``numerical [B, N]`` float -> logits ``[B]``."""
        return self.forward_with_representation(categorical, numerical)[0]

    def forward_with_representation(
        self, categorical: torch.Tensor, numerical: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits [B], representation [B, H])``; the representation is what the final scoring layer
        reads (the penultimate hidden layer; each model documents its ``H``), used by RKD."""
        fields = self.embedding(categorical, numerical)
        logits, representation = self.interact(fields, categorical, numerical)
        return logits + self.logit_offset, representation

    def set_base_rate(self, rate: float) -> None:
        """Start the model at the label's base rate: ``logit_offset = log(rate / (1 - rate))``.

        Why: with the offset at 0 a fresh model predicts 0.5 while clicks are rare, so every early
        gradient pushes all logits down. Adam (dense lr 1e-3) moves the biases of the narrow last
        hidden layer by 1e-3 per step while, with embeddings initialised at 1e-4, that layer's inputs
        are of the same tiny order; if the output weights of all its units are positive, every unit is
        switched off within ~10 steps and never recovers (the paper's MLP [64, 32, 4] teacher ended as
        a constant predictor at 2 of 5 seeds). Starting at the base rate removes that systematic push.
        The offset is a buffer, not a parameter: the model's own biases learn any later shift.
        """
        from crossadapt.metrics import log_odds

        self.logit_offset.fill_(log_odds(rate))

    # -- parameter groups --------------------------------------------------------------------------

    def embedding_modules(self) -> list[FeatureEmbedding]:
        """Every fused embedding in the model: ``self.embedding`` first, then first-order tables."""
        return [module for module in self.modules() if isinstance(module, FeatureEmbedding)]

    def embedding_parameters(self) -> list[nn.Parameter]:
        """Embedding tables, numerical vectors and width-1 first-order weights (the trainer's lr 0.1 group)."""
        return [p for module in self.embedding_modules() for p in module.parameters()]

    def interaction_parameters(self) -> list[nn.Parameter]:
        """Every other parameter (the trainer's lr 1e-3 group)."""
        embedding_ids = {id(p) for p in self.embedding_parameters()}
        return [p for p in self.parameters() if id(p) not in embedding_ids]

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The fused tables whose gradients are sparse right now (give these to ``SparseAdam``; the rest of
        :meth:`embedding_parameters`, e.g. numerical vectors, gets dense gradients). Empty unless sparse."""
        return [module.table.weight for module in self.embedding_modules() if module.sparse]

    def set_sparse_gradients(self, sparse: bool) -> None:
        """Switch every fused table between sparse and dense gradients."""
        for module in self.embedding_modules():
            module.sparse = sparse

    def freeze_embeddings(self, frozen: bool = True) -> None:
        """Stop (or resume) gradients for :meth:`embedding_parameters` only (progressive distillation, phase 1)."""
        for parameter in self.embedding_parameters():
            parameter.requires_grad_(not frozen)

    @property
    def embeddings_frozen(self) -> bool:
        return not any(p.requires_grad for p in self.embedding_parameters())

    # -- initialisation ------------------------------------------------------------------------------

    def reset_interaction_parameters(self) -> None:
        """FuxiCTR initialisation of dense layers: Xavier-normal weights, zero biases. Called by subclasses
        at the end of ``__init__``; layers with their own scheme (``reset_parameters`` other than
        Linear's) keep it."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def extra_repr(self) -> str:
        return f"architecture={self.architecture!r}, fields={self.num_fields}, width={self.config.embedding_dim}"
