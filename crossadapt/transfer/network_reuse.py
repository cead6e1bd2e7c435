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

from collections.abc import Sequence
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import torch

    from crossadapt.models import CTRModel

__all__ = ["NetworkReuse", "reuse_teacher_network"]

#: The state the projection transfers (crossadapt.transfer.projection.project_model_embeddings).
_PROJECTED_PREFIX = "embedding."


class NetworkReuse(BaseModel):
    """Whether the student's network started from the teacher's, and why not; the same from either path (the
    in-process pipeline, or the offline distiller's `initial_tables.teacher_network`). Build it with :meth:`of`."""

    model_config = ConfigDict(extra="forbid")

    reused: bool
    tensors: int = Field(0, ge=0, description="Tensors taken from the teacher (0: the student's own random init).")
    reason: str = Field("", description="Why not, where the path knows it.")
    mismatched: list[str] = Field(default_factory=list, description="The first tensors that differ, if known.")
    copied: list[str] = Field(default_factory=list, exclude=True, description="Their names (`tensors` counts them).")

    @classmethod
    def of(cls, copied: Sequence[str], *, reason: str = "", mismatched: Sequence[str] = ()) -> NetworkReuse:
        return cls(reused=bool(copied), tensors=len(copied), reason=reason, mismatched=list(mismatched),
                   copied=list(copied))

    def sentence(self) -> str:
        if self.reused:
            return (f"The student has the teacher's architecture and width: its network started from the "
                    f"teacher's ({self.tensors} tensors, the logit offset included), its tables projected.")
        why = f" ({self.reason})" if self.reason else ""
        return f"The student's network started from its own random init{why}; its tables were projected."


def _network_state(model: CTRModel) -> dict[str, torch.Tensor]:
    return {name: value for name, value in model.state_dict().items() if not name.startswith(_PROJECTED_PREFIX)}


def reuse_teacher_network(teacher: CTRModel, student: CTRModel) -> NetworkReuse:
    """Copy the teacher's network (everything but the main embedding tables) into ``student`` when both
    have the same architecture and the same tensors, name for name and shape for shape; otherwise leave the
    student untouched and say why. The student's tables are not read or written."""
    import torch

    if teacher.architecture != student.architecture:
        return NetworkReuse.of([], reason=f"the teacher is {teacher.architecture!r}, the student {student.architecture!r}")
    theirs, ours = _network_state(teacher), _network_state(student)
    mismatched = sorted(
        name for name in theirs.keys() | ours.keys()
        if name not in theirs or name not in ours or theirs[name].shape != ours[name].shape
    )
    if mismatched:
        return NetworkReuse.of([], reason=f"{len(mismatched)} of the network's tensors differ in name or shape "
                               "(another width or another tower)", mismatched=mismatched[:5])
    with torch.no_grad():
        for name, value in ours.items():
            value.copy_(theirs[name].to(value.device, value.dtype))
    return NetworkReuse.of(sorted(ours))
