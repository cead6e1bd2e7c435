"""Collaborative co-distillation (CrossAdapt-Collaborative): the teacher also learns from the student.

The related paper (Continual Collaborative Distillation, CCD: "both the teacher and the student continually
and collaboratively evolve along the data stream") lets knowledge flow both ways: the student adapts to the
stream quickly (it steps every batch), and the teacher, which steps only every ``τ`` batches in CrossAdapt's
asymmetric schedule, takes the student's knowledge of what is new (entities that appear only in the
stream, recent drift) into account. The text we have of that paper is its abstract, which gives no loss;
the form here is ours, chosen to mirror CrossAdapt's own student-side KD:

    L_T = BCE(z_T, y) + μ · (1/|B|) Σ_i a_i · T² · CE(σ(z_S,i / T), σ(z_T,i / T))

over the teacher's rows ``B_aug`` of each batch, with the student's logits ``z_S`` detached (the student is
not moved by the teacher's term) and ``a_i`` a per-row weight that says where the student knows more:

- ``"student_better"`` (default): ``a_i = 1`` where the student's BCE on the true label is below the
  teacher's, else 0 (the mirror image of the student-side ``kd_gate="teacher_better"``): rows the teacher
  already predicts better pull it nowhere, so its accumulated knowledge is not dragged toward the student.
- ``"gap"``: ``a_i = clamp((ℓ_T,i − ℓ_S,i) / ℓ_T,i, 0, 1)``, the relative loss gap: a soft version of
  the gate that weighs a row by how much better the student is on it (0 where the teacher is as good).
- ``"all"``: ``a_i = 1`` (plain mutual learning, Deep Mutual Learning's teacher side).

As in :func:`~crossadapt.transfer.offline.losses.kd_cross_entropy` the weighted sum is divided by ``|B|``,
not by ``Σ a_i``, so the term shrinks as fewer rows qualify. ``z_S`` are the student's logits of the batch
BEFORE its own step on it (what the student learned from the earlier stream, not this batch's labels), in
eval mode (without dropout noise).

The teacher keeps CrossAdapt's schedule (:class:`~crossadapt.transfer.online.teacher_schedule.AsymmetricTeacher`):
gradients accumulate every batch and the teacher steps every ``τ``. In the deferred mode the weights ``a_i``
are computed when the batch arrives (from the teacher's logits of that moment, which equal those at its
next step since the teacher does not change in between) and kept with the batch, so the one forward and
backward at the step gives exactly the sum of the per-batch losses.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F

from crossadapt.data.batch import Batch
from crossadapt.transfer.offline.losses import kd_cross_entropy, teacher_better_rows
from crossadapt.transfer.online.config import CollaborationGate, CollaborativeConfig
from crossadapt.transfer.online.teacher_schedule import AsymmetricTeacher

__all__ = ["CollaborativeConfig", "CollaborativeTeacher", "collaboration_weights", "teacher_collaborative_loss"]

def collaboration_weights(teacher_logits: torch.Tensor, student_logits: torch.Tensor, labels: torch.Tensor,
                          gate: CollaborationGate) -> torch.Tensor:
    """``[B]`` detached per-row weights ``a_i`` of the teacher's KD term (module docstring)."""
    z_t = teacher_logits.detach().float()
    if gate == "all":
        return torch.ones_like(z_t)
    if gate == "student_better":
        # teacher_better_rows(a, b, y) is 1 where b's loss is below a's: here the student's below the teacher's.
        return teacher_better_rows(z_t, student_logits.detach().float(), labels)
    if gate == "gap":
        y = labels.to(z_t.dtype)
        teacher_loss = F.binary_cross_entropy_with_logits(z_t, y, reduction="none")
        student_loss = F.binary_cross_entropy_with_logits(student_logits.detach().float(), y, reduction="none")
        return ((teacher_loss - student_loss) / teacher_loss.clamp_min(1e-12)).clamp(0.0, 1.0)
    raise ValueError(f"gate must be 'student_better', 'gap' or 'all', got {gate!r}")


def teacher_collaborative_loss(teacher_logits: torch.Tensor, labels: torch.Tensor, student_logits: torch.Tensor,
                               row_weights: torch.Tensor, config: CollaborativeConfig,
                               batch_weights: torch.Tensor | None = None) -> torch.Tensor:
    """``Σ_i w_i [BCE_i + μ a_i KD_i]`` with ``w_i = 1/|B|`` (or ``batch_weights``: ``1/|B_t|`` for a row of
    batch ``t`` when several batches are stacked, so the loss is the sum of the per-batch means)."""
    rows = teacher_logits.shape[0]
    w = batch_weights if batch_weights is not None else torch.full((rows,), 1.0 / rows, device=teacher_logits.device)
    w = w.to(teacher_logits.dtype)
    task = F.binary_cross_entropy_with_logits(teacher_logits, labels.to(teacher_logits.dtype), weight=w,
                                              reduction="sum")
    # kd_cross_entropy divides its weighted sum by the row count: rows · w_i · a_i gives Σ_i w_i a_i KD_i.
    kd = kd_cross_entropy(teacher_logits, student_logits.detach(), config.temperature,
                          scale_by_t2=config.scale_by_t2, row_weights=row_weights.to(w.dtype) * w * rows)
    return task + config.weight * kd


class CollaborativeTeacher(AsymmetricTeacher):
    """An :class:`AsymmetricTeacher` whose accumulated loss adds the KD term toward the student.

    :meth:`accumulate` takes the student's logits of the same rows (``student_logits``) besides the
    teacher's; ``collaboration`` (summed weights and rows seen) says how much of the stream taught the teacher.
    """

    def __init__(self, model: torch.nn.Module, config: CollaborativeConfig, **kwargs: Any):
        super().__init__(model, **kwargs)
        if not self.trainable:
            raise ValueError("collaborative co-distillation trains the teacher: it needs co_evolution")
        self.collaboration = config
        self._targets: list[tuple[torch.Tensor, torch.Tensor]] = []  # deferred: (student logits, a_i) per kept batch
        self._weight_sum = torch.zeros(())  # Σ a_i over the rows accumulated (synced only when read)
        self.rows_seen = 0

    @property
    def taught_share(self) -> float:
        """Mean ``a_i`` over the rows accumulated so far: the share of the stream where the student taught."""
        return float(self._weight_sum) / self.rows_seen if self.rows_seen else 0.0

    def accumulate(self, logits: torch.Tensor, labels: torch.Tensor, batch: Batch | None = None, *,
                   student_logits: torch.Tensor | None = None) -> None:
        if student_logits is None:
            raise ValueError("a CollaborativeTeacher needs the student's logits of the batch")
        if student_logits.shape != labels.shape:
            raise ValueError(f"student logits have shape {tuple(student_logits.shape)} but labels "
                             f"{tuple(labels.shape)}")
        student_logits = student_logits.detach()
        weights = collaboration_weights(logits, student_logits, labels, self.collaboration.gate)
        self._weight_sum = self._weight_sum.to(weights.device) + weights.sum()
        self.rows_seen += len(labels)
        if self.deferred:
            super().accumulate(logits, labels, batch)
            self._targets.append((student_logits, weights))
            return
        teacher_collaborative_loss(logits, labels, student_logits, weights, self.collaboration).backward()
        self.pending += 1

    def finish(self, t: int, policy: Literal["drop", "flush"]) -> bool:
        stepped = super().finish(t, policy)
        self._targets = []
        return stepped

    def _backward_kept(self) -> None:
        """The deferred window's loss (sum of the per-batch losses) in one eval-mode forward and backward."""
        kept, targets = self._kept, self._targets
        self._kept, self._targets = [], []
        rows = Batch.concat(kept)
        self.model.eval()
        logits = self.model(rows.categorical, rows.numerical)
        batch_weights = torch.cat([torch.full((len(b),), 1.0 / len(b), device=logits.device) for b in kept])
        student = torch.cat([s for s, _ in targets]).to(logits.device)
        weights = torch.cat([a for _, a in targets]).to(logits.device)
        teacher_collaborative_loss(logits, rows.label, student, weights, self.collaboration,
                                   batch_weights).backward()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["collaboration"] = {"targets": [(s.cpu(), a.cpu()) for s, a in self._targets],
                                  "weight_sum": float(self._weight_sum), "rows_seen": self.rows_seen}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "collaboration" not in state:
            raise ValueError("the saved teacher schedule is not collaborative")
        super().load_state_dict(state)
        device = next(self.model.parameters()).device
        saved = state["collaboration"]
        self._targets = [(s.to(device), a.to(device)) for s, a in saved["targets"]]
        self._weight_sum = torch.tensor(float(saved["weight_sum"]))
        self.rows_seen = int(saved["rows_seen"])
