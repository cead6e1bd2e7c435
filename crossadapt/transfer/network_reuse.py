"""The student's network from the teacher's, when the two networks are the same (beyond the paper).

The paper transfers the embedding tables only (projection, §3.1.1) and trains the student's interaction
network from a random init: its students differ from their teachers in architecture, so nothing else has a
place to go. A switch whose student keeps the teacher's architecture at the teacher's width (a re-hosting,
new hyper-parameters, a new training schedule, MLP-8 → MLP-8 in the bench) would then throw away the one
part of the teacher that fits the student exactly, and learn it again from a 10% sample.
:func:`reuse_teacher_network` copies it instead: every parameter and buffer outside the main embedding
tables (the deep tower, any first-order tables, the logit offset), so that with the tables' copy projection
the student starts as the teacher and distillation continues from there.

All or nothing: a partial copy (the tower's later layers under a first layer of another width) hands a
layer inputs it was never trained on, which is no better than a random init and harder to read in a report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from crossadapt.models import CTRModel

__all__ = ["NetworkReuse", "reuse_teacher_network"]

#: The state the projection transfers (crossadapt.transfer.projection.project_model_embeddings).
_PROJECTED_PREFIX = "embedding."


@dataclass
class NetworkReuse:
    """What :func:`reuse_teacher_network` did: the tensors it copied (none: not reused) and why not."""

    copied: list[str] = field(default_factory=list)
    reason: str = ""
    mismatched: list[str] = field(default_factory=list)  # the first few names that differ (absent or reshaped)

    @property
    def reused(self) -> bool:
        return bool(self.copied)

    def to_dict(self) -> dict[str, object]:
        return {"reused": self.reused, "tensors": len(self.copied), "reason": self.reason,
                "mismatched": self.mismatched}


def _network_state(model: CTRModel) -> dict[str, torch.Tensor]:
    return {name: value for name, value in model.state_dict().items() if not name.startswith(_PROJECTED_PREFIX)}


def reuse_teacher_network(teacher: CTRModel, student: CTRModel) -> NetworkReuse:
    """Copy the teacher's network (everything but the main embedding tables) into ``student`` when both
    have the same architecture and the same tensors, name for name and shape for shape; otherwise leave the
    student untouched and say why. The student's tables are not read or written."""
    if teacher.architecture != student.architecture:
        return NetworkReuse(reason=f"the teacher is {teacher.architecture!r}, the student {student.architecture!r}")
    theirs, ours = _network_state(teacher), _network_state(student)
    mismatched = sorted(
        name for name in theirs.keys() | ours.keys()
        if name not in theirs or name not in ours or theirs[name].shape != ours[name].shape
    )
    if mismatched:
        return NetworkReuse(reason=f"{len(mismatched)} of the network's tensors differ in name or shape "
                            "(another width or another tower)", mismatched=mismatched[:5])
    with torch.no_grad():
        for name, value in ours.items():
            value.copy_(theirs[name].to(value.device, value.dtype))
    return NetworkReuse(copied=sorted(ours))
