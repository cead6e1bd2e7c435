"""What the offline distiller's server and its tasks share without the engine: the stores an operation works
on, and discarding what a failed or cancelled operation left. The training itself (`pipeline`, torch) loads
only in a worker."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from services.common.operations import OperationStore
from services.common.storage.checkpoints import CheckpointStore
from services.common.storage.datasets import DatasetStore
from services.common.training_state import delete_checkpoint
from services.offline_distiller.plan import DistillationPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistillerContext:
    """The stores a task works on (one per worker process)."""

    checkpoints: CheckpointStore
    datasets: DatasetStore
    operations: OperationStore


def discard_outputs(ctx: DistillerContext, plan: DistillationPlan) -> None:
    """After a failure or a cancel: drop the work-in-progress checkpoints and the unpublished student files."""
    delete_checkpoint(ctx.checkpoints, plan.wip_name)
    if plan.student_version:
        try:
            ctx.checkpoints.discard(plan.student_name, plan.student_version)
        except Exception:  # published already (a cancel lost the race with publish): keep it
            log.warning("student version not discarded", extra={"operation_id": plan.operation_id})
