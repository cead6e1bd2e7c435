"""The offline-distiller's Celery task: one long, resumable distillation per operation.

    crossadapt.offline_distiller.distill(operation_id)

A delivery counts itself, takes the operation's lease (a redelivered copy waits while the holder is
alive), trains from the newest work-in-progress checkpoint (services.offline_distiller.pipeline),
publishes the student and marks the operation SUCCEEDED. Transient errors (broker, Redis, S3) retry
the task, which resumes from the last checkpoint; a permanent error fails the operation with its
code; a cancel stops the loop at its next progress report.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, Task, shared_task
from celery.exceptions import Ignore
from celery.signals import worker_init

from services.common.operations import OperationState, open_operation_store
from services.common.settings import get_settings
from services.common.storage import CheckpointStore, DatasetStore, open_object_store
from services.common.task_steps import (OperationSteps, preload_training_runtime, task_id as unit_task_id,
                                        worker_module)
from services.common.training_state import delete_checkpoint
from services.offline_distiller.context import DistillerContext, discard_outputs
from services.offline_distiller.plan import DistillationPlan
from services.offline_distiller.spec import SPEC

log = logging.getLogger(__name__)
TASK_NAME = f"{SPEC.task_prefix}.distill"
STAGES = ("", "prepare", "frozen", "joint", "publish", "done")


@lru_cache(maxsize=1)
def context() -> DistillerContext:
    """Stores of this worker process (built after the fork: connections are not shared)."""
    settings = get_settings()
    objects = open_object_store(settings)
    return DistillerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                            operations=open_operation_store(settings))


# In the worker's main process, before the pool forks (see task_steps.preload_training_runtime).
worker_init.connect(preload_training_runtime, weak=False)
pipeline = worker_module("services.offline_distiller.pipeline")


def load_plan(params: dict[str, Any]) -> DistillationPlan:
    """The plan stored in the operation record at Start."""
    return DistillationPlan.model_validate(params["plan"])


STEPS: OperationSteps[DistillationPlan] = OperationSteps(
    stages=STAGES, operations=lambda: context().operations, load_plan=load_plan,
    discard=lambda plan: discard_outputs(context(), plan))


def task_id(operation_id: str) -> str:
    """The Celery task id of an operation's task (Cancel revokes it)."""
    return unit_task_id(operation_id, "distill")


@shared_task(bind=True, base=STEPS.task_base(), name=TASK_NAME)
def distill_task(self: Task, operation_id: str) -> dict[str, str]:
    ctx = context()
    lease, plan = STEPS.take_lease(self, operation_id, "prepare")
    try:
        report = STEPS.lease_reporter(self, lease)
        published = STEPS.run(self, lambda: pipeline().run_distillation(ctx, plan, report))
        result = {"name": published.name, "version": published.version}
        done = ctx.operations.transition(operation_id, {OperationState.RUNNING}, state=OperationState.SUCCEEDED,
                                         stage="done", result=result)
        if done is None:  # cancelled or failed while publishing: the published student stays, complete
            log.warning("operation ended while publishing", extra={"operation_id": operation_id})
        delete_checkpoint(ctx.checkpoints, plan.wip_name)
        log.info("operation succeeded", extra={"operation_id": operation_id, "checkpoint": published.ref})
        return result
    except Ignore:
        # Cancelled (or failed elsewhere) mid-run: the canceller's cleanup may have run before this task's
        # last checkpoint landed, so clean up once more here.
        record = ctx.operations.get(operation_id)
        if record.terminal and record.state != OperationState.SUCCEEDED:
            STEPS.discard_record(record)
        raise
    finally:
        lease.release()


def launch(app: Celery, operation_id: str) -> str:
    """Send the operation's task to the broker; returns its task id."""
    app.signature(TASK_NAME, args=(operation_id,), immutable=True).set(task_id=task_id(operation_id)).apply_async()
    return task_id(operation_id)
