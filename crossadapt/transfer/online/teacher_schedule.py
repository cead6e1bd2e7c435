"""The teacher's side of asymmetric co-distillation (paper Eq. 11-12): accumulate, then step every τ batches.

Each stream batch ``t = 1, 2, ...`` adds the gradient of the teacher's BCE to its ``.grad`` (autograd sums
them: Eq. 11); at ``t mod τ = 0`` the teacher takes one optimiser step on that sum and clears it (Eq. 12).
The schedule lives apart from the co-distillation loop (:mod:`crossadapt.transfer.online.codistillation`) because
the KD baselines drive the same teacher with ``τ = 1``.

Choices:
- Optimiser: ``"adam"`` (default; the paper trains every model with Adam, lr 0.1 embeddings / 1e-3 network,
  so Eq. 12 is read as one optimiser step on the accumulated gradient; Adam is invariant to the gradient's
  scale, so summing vs averaging over τ does not matter) or ``"sgd"``: exactly ``θ ← θ − η_T · g`` with
  ``g`` the SUM of the τ per-step gradients.
- The teacher runs in eval mode: KD targets are its inference predictions, and between its steps the
  teacher is bit-for-bit unchanged (parameters and buffers, e.g. batch-norm statistics).
- Deferred gradient (default where ``τ > 1``): between its steps the teacher's parameters are constant and
  its forward runs in eval mode, so ``Σ_t ∇BCE_t(θ) = ∇ Σ_t BCE_t(θ)``. The teacher therefore keeps the
  pending batches (inputs and labels only) and, at ``t mod τ = 0``, takes one forward and backward over
  all of them, each row weighted by ``1 / |B_t|`` so the loss is exactly the sum of the per-batch means.
  Each stream batch then costs the teacher only an autograd-free forward (for the KD targets) instead
  of a forward with a graph plus a backward; one large backward every τ batches is cheaper than τ small
  ones, most of all for small teachers whose step is dominated by per-call overhead. The result equals
  the per-step accumulation up to float summation order (``deferred=False`` keeps the per-step form).
- Partial window at the end (``t_end mod τ ≠ 0``): :meth:`AsymmetricTeacher.finish` with ``"drop"``
  discards the pending gradient, as Algorithm 1 does (the loop simply ends), so the teacher only ever
  changes at ``t = τ, 2τ, ...``; ``"flush"`` applies it as one final step.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from crossadapt.data.batch import Batch
from crossadapt.training.optim import TrainOptimizer, split_parameters
from crossadapt.transfer.offline.distillation import KDFeatures, forward_with_features

__all__ = ["AsymmetricTeacher"]


class AsymmetricTeacher:
    """The teacher side of Eq. 11-12: accumulate BCE gradients every batch, step every ``interval`` batches.

    Args:
        model: the teacher CTRModel (updated in place unless ``trainable=False``).
        interval: τ.
        optimizer: ``"adam"`` (Adam/SparseAdam at the two lrs) or ``"sgd"`` (plain ``θ − η g``).
        trainable: False freezes the teacher: its forward runs without autograd and nothing accumulates.
        deferred: compute the accumulated gradient once per window from the kept batches (see the module
            docstring); only where ``interval > 1``, since with ``τ = 1`` it would cost an extra forward.
    """

    def __init__(self, model: nn.Module, *, interval: int, optimizer: Literal["adam", "sgd"],
                 embedding_lr: float, dense_lr: float, trainable: bool = True, deferred: bool = True):
        self.model = model
        self.interval = interval
        self.trainable = trainable
        self.deferred = deferred and trainable and interval > 1
        self.pending = 0  # batches accumulated since the last step
        self._kept: list[Batch] = []  # deferred mode: those batches' inputs, with the labels the BCE is taken on
        self.update_steps: list[int] = []  # values of t at which the teacher stepped
        self.optimizer: Any = None
        if trainable:
            self.optimizer = (TrainOptimizer(model, embedding_lr=embedding_lr, dense_lr=dense_lr)
                              if optimizer == "adam" else _sgd(model, embedding_lr, dense_lr))
            self.optimizer.zero_grad()

    def logits_and_features(
        self, batch: Batch, features: KDFeatures | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B]`` teacher logits in eval mode (autograd iff trainable and not deferred) and, from the same
        forward, the detached field embeddings ``[B, F, D_T]`` or penultimate representation ``[B, H_T]`` if asked."""
        self.model.eval()
        with torch.set_grad_enabled(self.trainable and not self.deferred):
            logits, context = forward_with_features(self.model, batch, features)
        return logits, None if context is None else context.detach()

    def accumulate(self, logits: torch.Tensor, labels: torch.Tensor, batch: Batch | None = None) -> None:
        """Add ``∇ BCE(logits, labels)`` to the pending gradient (Eq. 11). ``batch`` (the rows ``logits`` came
        from) is required in deferred mode, where the gradient is taken from it at the step."""
        if not self.trainable:
            return
        if self.deferred:
            if batch is None:
                raise ValueError("a deferred AsymmetricTeacher needs the batch its logits came from")
            if len(batch) != len(labels):
                raise ValueError(f"batch has {len(batch)} rows but labels {len(labels)}")
            self._kept.append(Batch(categorical=batch.categorical, numerical=batch.numerical, label=labels))
        else:
            F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype)).backward()
        self.pending += 1

    def maybe_step(self, t: int) -> bool:
        """Eq. 12: step and clear the gradient iff ``t mod τ = 0``; True if it stepped."""
        if self.trainable and self.pending and t % self.interval == 0:
            return self._step(t)
        return False

    def finish(self, t: int, policy: Literal["drop", "flush"]) -> bool:
        """End of stream: flush (step) or drop the partial window; True if it stepped."""
        if not self.trainable or self.pending == 0:
            return False
        if policy == "flush":
            return self._step(t)
        self.optimizer.zero_grad()
        self.pending, self._kept = 0, []
        return False

    # -- checkpointing -------------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """The schedule's state besides the model's weights: optimiser, the pending window (the kept batches in
        deferred mode, the accumulated ``.grad`` otherwise) and the steps taken. Plain values and tensors."""
        state: dict[str, Any] = {"pending": self.pending, "update_steps": list(self.update_steps),
                                 "optimizer": self.optimizer.state_dict() if self.optimizer is not None else None,
                                 "kept": [], "grads": None}
        if self.deferred:
            state["kept"] = [{"categorical": b.categorical.cpu(), "numerical": b.numerical.cpu(), "label": b.label.cpu()}
                             for b in self._kept]
        elif self.pending:
            state["grads"] = [None if p.grad is None else p.grad.detach().cpu() for p in self.model.parameters()]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from :meth:`state_dict` (on a teacher holding the saved weights, same interval and mode)."""
        if (state["optimizer"] is None) != (self.optimizer is None):
            raise ValueError("the saved teacher schedule and this one differ in whether the teacher trains")
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
        self.pending = int(state["pending"])
        self.update_steps = [int(t) for t in state["update_steps"]]
        device = next(self.model.parameters()).device
        self._kept = [Batch(categorical=b["categorical"].to(device), numerical=b["numerical"].to(device),
                            label=b["label"].to(device)) for b in state["kept"]]
        if self.pending and not self.deferred and state["grads"] is None:
            raise ValueError("the saved schedule has a pending window but no gradient (it was deferred)")
        if self.pending and self.deferred and len(self._kept) != self.pending:
            raise ValueError("the saved schedule kept no batches for its pending window (it was not deferred)")
        if state["grads"] is not None:
            for parameter, grad in zip(self.model.parameters(), state["grads"], strict=True):
                parameter.grad = None if grad is None else grad.to(parameter.device)

    def _step(self, t: int) -> bool:
        if self.deferred:
            self._backward_kept()
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.pending = 0
        self.update_steps.append(t)
        return True

    def _backward_kept(self) -> None:
        """``∇ Σ_t mean_i BCE`` over the kept batches in one eval-mode forward and backward."""
        kept, self._kept = self._kept, []
        rows = Batch.concat(kept)
        self.model.eval()
        logits = self.model(rows.categorical, rows.numerical)
        weights = torch.cat([torch.full((len(b),), 1.0 / len(b), dtype=logits.dtype, device=logits.device)
                             for b in kept])
        F.binary_cross_entropy_with_logits(logits, rows.label.to(logits.dtype), weight=weights,
                                           reduction="sum").backward()


def _sgd(model: nn.Module, embedding_lr: float, dense_lr: float) -> torch.optim.SGD:
    """Plain ``θ ← θ − η g`` with an embedding lr and a dense lr (SGD accepts sparse gradients)."""
    sparse, dense_embedding, dense = split_parameters(model)
    groups = [{"params": sparse + dense_embedding, "lr": embedding_lr}, {"params": dense, "lr": dense_lr}]
    return torch.optim.SGD([g for g in groups if g["params"]], lr=dense_lr)
