"""Loss terms of CrossAdapt and of the KD baselines; logits in, numerically stable (log-sigmoid).

Symbols: ``B`` batch rows, ``F`` fields, ``D_S``/``D_T`` student/teacher widths, ``H_S``/``H_T`` widths of
the per-sample representations (penultimate layers). Every loss returns a scalar (mean over the batch).

Temperature and ``T²``: the distillation terms soften both models by ``T`` (``p = σ(z / T)``). The gradient
of the softened loss with respect to the student logit is ``(p_S - p_T) / T``, which for large ``T`` shrinks
like ``(z_S - z_T) / (4 T²)``. Hinton et al. multiply by ``T²`` so that the KD term keeps the same scale
against the BCE term whatever ``T``. We do the same by default (``scale_by_t2=True``): it is the reading
consistent with the paper's Fig. 6c, where AUC is flat for ``T`` from 4 to 100. Without ``T²`` a weight
``λ = 0.7`` at ``T = 100`` would carry a gradient ~10⁴ times smaller, i.e. behave like ``λ = 0``, which the
paper reports as clearly worse (79.92 vs 80.27). Pass ``scale_by_t2=False`` for the unscaled form.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "bce",
    "kd_cross_entropy",
    "kd_kl",
    "hint_mse",
    "rkd_distance",
    "rkd_angle",
    "sample_rows",
    "teacher_better_rows",
]


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits have shape {tuple(student_logits.shape)} but teacher logits {tuple(teacher_logits.shape)}"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy of ``σ(logits)`` against ``labels``.

    Args:
        logits: ``[B]`` raw scores.
        labels: ``[B]`` targets in [0, 1] (hard clicks or soft pseudo-labels).
    """
    if logits.shape != labels.shape:
        raise ValueError(f"logits have shape {tuple(logits.shape)} but labels {tuple(labels.shape)}")
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


def kd_cross_entropy(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    *,
    scale_by_t2: bool = True,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Paper Eq. 5's ``L_KD``: cross-entropy of the softened student against the softened teacher.

    ``L = -mean_i [p_T log p_S + (1 - p_T) log(1 - p_S)]`` with ``p_T = σ(z_T / T)``, ``p_S = σ(z_S / T)``,
    times ``T²`` when ``scale_by_t2``. For a fixed teacher it is minimised exactly at ``z_S = z_T``, where it
    equals the teacher's (softened) entropy, not zero; its gradient there is zero. The teacher side is
    detached: distillation never moves the teacher.

    Args:
        student_logits: ``[B]``.
        teacher_logits: ``[B]``.
        temperature: ``T > 0``.
        scale_by_t2: multiply by ``T²`` (see the module docstring).
        row_weights: ``[B]`` per-row weights (e.g. :func:`teacher_better_rows`); the sum is divided by
            ``B``, not by the weights' sum, so fewer distilled rows mean a smaller KD term.

    Example::

        kd_cross_entropy(torch.tensor([0.0]), torch.tensor([0.0]), temperature=1.0)  # = log 2
    """
    _check_logits(student_logits, teacher_logits, temperature)
    z_s = student_logits / temperature
    p_t = torch.sigmoid(teacher_logits.detach().to(z_s.dtype) / temperature)
    # log σ(z) and log(1 - σ(z)) = log σ(-z): finite for any logit, unlike log(sigmoid(z)).
    per_row = -(p_t * F.logsigmoid(z_s) + (1.0 - p_t) * F.logsigmoid(-z_s))
    loss = _weighted_mean(per_row, row_weights)
    return loss * (temperature**2) if scale_by_t2 else loss


def kd_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 4.0,
    *,
    scale_by_t2: bool = True,
    row_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Vanilla-KD's term: ``KL(Bern(p_T) || Bern(p_S))`` of the softened models, mean over the batch.

    Equals :func:`kd_cross_entropy` minus the teacher's entropy, so it has the same student gradient but is
    ``0`` at ``z_S = z_T`` and ``>= 0`` everywhere. The teacher side is detached.

    Args:
        student_logits: ``[B]``.
        teacher_logits: ``[B]``.
        temperature: ``T > 0``.
        scale_by_t2: multiply by ``T²``.
        row_weights: as in :func:`kd_cross_entropy`.
    """
    _check_logits(student_logits, teacher_logits, temperature)
    z_s = student_logits / temperature
    z_t = teacher_logits.detach().to(z_s.dtype) / temperature
    p_t = torch.sigmoid(z_t)
    per_row = p_t * (F.logsigmoid(z_t) - F.logsigmoid(z_s)) + (1.0 - p_t) * (F.logsigmoid(-z_t) - F.logsigmoid(-z_s))
    loss = _weighted_mean(per_row, row_weights)
    return loss * (temperature**2) if scale_by_t2 else loss


def _weighted_mean(per_row: torch.Tensor, row_weights: torch.Tensor | None) -> torch.Tensor:
    if row_weights is None:
        return per_row.mean()
    if row_weights.shape != per_row.shape:
        raise ValueError(f"row_weights have shape {tuple(row_weights.shape)} but the batch {tuple(per_row.shape)}")
    return (per_row * row_weights.detach().to(per_row.dtype)).sum() / per_row.numel()


def teacher_better_rows(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``[B]`` 1.0 where the teacher's BCE on the true label is below the student's, else 0.0 (detached).

    The KD gate ``kd_gate="teacher_better"``: a row is distilled only where the teacher currently knows
    it better than the student, so a student that outgrows its teacher is no longer pulled toward the
    teacher's errors, and the effective KD weight falls with the share of rows the teacher still wins.
    """
    if not (student_logits.shape == teacher_logits.shape == labels.shape):
        raise ValueError(f"shapes differ: student {tuple(student_logits.shape)}, teacher "
                         f"{tuple(teacher_logits.shape)}, labels {tuple(labels.shape)}")
    z_s = student_logits.detach()
    y = labels.to(z_s.dtype)
    student_loss = F.binary_cross_entropy_with_logits(z_s, y, reduction="none")
    teacher_loss = F.binary_cross_entropy_with_logits(teacher_logits.detach().to(z_s.dtype), y, reduction="none")
    return (teacher_loss < student_loss).to(z_s.dtype)


def hint_mse(projected_student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Hint-KD (FitNets) term: mean squared error between projected student and (detached) teacher features.

    Args:
        projected_student: ``[B, F, D_T]`` student field embeddings after the learned ``D_S → D_T`` map
            (or ``[B, H_T]`` projected hidden representations).
        teacher: same shape as ``projected_student``; detached here.
    """
    if projected_student.shape != teacher.shape:
        raise ValueError(
            f"projected student features have shape {tuple(projected_student.shape)} "
            f"but teacher features {tuple(teacher.shape)}"
        )
    return F.mse_loss(projected_student, teacher.detach().to(projected_student.dtype))


def sample_rows(batch_rows: int, max_rows: int, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """Row indices ``[m]`` (without replacement) that bound the cost of RKD, or ``None`` to keep all rows."""
    if max_rows < 2:
        raise ValueError(f"max_rows must be >= 2, got {max_rows}")
    if batch_rows <= max_rows:
        return None
    return torch.randperm(batch_rows, generator=generator)[:max_rows]


def _pairwise_distances(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``[m, m]`` Euclidean distances of the rows of ``x [m, H]`` (differentiable, zero on the diagonal)."""
    sq = (x.unsqueeze(0) - x.unsqueeze(1)).pow(2).sum(-1)
    # sqrt'(0) is infinite: clamp before the root so the diagonal does not poison the gradient.
    return sq.clamp_min(eps).sqrt() * (1.0 - torch.eye(x.shape[0], device=x.device, dtype=x.dtype))


def _as_matrix(name: str, x: torch.Tensor) -> torch.Tensor:
    if x.dim() < 2:
        raise ValueError(f"{name} must be [B, H] (or [B, ...], flattened), got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)


def _rkd_inputs(
    student: torch.Tensor, teacher: torch.Tensor, rows: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    s, t = _as_matrix("student representation", student), _as_matrix("teacher representation", teacher.detach())
    if s.shape[0] != t.shape[0]:
        raise ValueError(f"student has {s.shape[0]} rows but teacher has {t.shape[0]}")
    if s.shape[0] < 2:
        raise ValueError(f"RKD needs at least 2 rows, got {s.shape[0]}")
    if rows is not None:
        s, t = s[rows.to(s.device)], t[rows.to(t.device)]
    return s, t.to(s.dtype)


def rkd_distance(
    student: torch.Tensor, teacher: torch.Tensor, *, rows: torch.Tensor | None = None, eps: float = 1e-12
) -> torch.Tensor:
    """RKD distance term (Park et al. 2019): Huber loss between mean-normalised pairwise distances.

    ``ψ_D(i, j) = ‖x_i − x_j‖ / μ`` with ``μ`` the mean distance over the distinct pairs of the (sub)batch,
    computed separately in each model's own space, so ``H_S`` and ``H_T`` may differ. Cost ``O(m² H)``.

    Args:
        student: ``[B, H_S]`` student representations (e.g. the penultimate layer).
        teacher: ``[B, H_T]`` teacher representations (detached here).
        rows: optional ``[m]`` row indices to compare (see :func:`sample_rows`); all ``B`` rows otherwise.
        eps: floor of squared distances before the square root.
    """
    s, t = _rkd_inputs(student, teacher, rows)
    m = s.shape[0]
    off_diagonal = ~torch.eye(m, dtype=torch.bool, device=s.device)
    d_s, d_t = _pairwise_distances(s, eps), _pairwise_distances(t, eps)
    d_s = d_s / d_s[off_diagonal].mean().clamp_min(eps)
    d_t = d_t / d_t[off_diagonal].mean().clamp_min(eps)
    return F.smooth_l1_loss(d_s[off_diagonal], d_t[off_diagonal])


def _angle_cosines(x: torch.Tensor, eps: float) -> torch.Tensor:
    """``[m, m, m]`` cosines ``<e_ji, e_ki>`` of the angle at vertex ``i`` (index order ``[i, j, k]``)."""
    diff = x.unsqueeze(0) - x.unsqueeze(1)  # [i, j] = x_j - x_i
    unit = diff / diff.norm(dim=-1, keepdim=True).clamp_min(eps)
    return torch.bmm(unit, unit.transpose(1, 2))


def rkd_angle(
    student: torch.Tensor, teacher: torch.Tensor, *, rows: torch.Tensor | None = None, eps: float = 1e-12
) -> torch.Tensor:
    """RKD angle term: Huber loss between the cosines of the angles of all triplets of the (sub)batch.

    ``ψ_A(i, j, k) = cos ∠(x_j − x_i, x_k − x_i)``, scale-free, so the widths may differ. Cost ``O(m³ + m² H)``
    memory and time: pass ``rows`` from :func:`sample_rows` (e.g. 64 rows → 262k triplets) for large batches.
    Degenerate triplets (a repeated row) have a zero difference vector and cosine 0 in both models.

    Args:
        student: ``[B, H_S]``.
        teacher: ``[B, H_T]`` (detached here).
        rows: optional ``[m]`` row indices.
        eps: floor of difference norms.
    """
    s, t = _rkd_inputs(student, teacher, rows)
    return F.smooth_l1_loss(_angle_cosines(s, eps).reshape(-1), _angle_cosines(t, eps).reshape(-1))
