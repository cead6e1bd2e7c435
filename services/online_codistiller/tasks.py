"""The online co-distiller's Celery task: one long-running co-distillation over a stream per operation.

    crossadapt.online_codistiller.codistill(operation_id)

A delivery counts itself, takes the operation's lease (a redelivered copy waits while the holder is
alive), resumes at the newest student this operation published (services.online_codistiller.pipeline)
and runs to the end of the stream, or, with `follow`, until cancelled. Transient errors retry the
task from the last checkpoint; a permanent error (e.g. a partition with another schema) fails the
operation naming what was bad. What was published stays: every checkpoint is a complete pair.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

from celery import Celery, Task, shared_task
from celery.signals import worker_init

from services.common.operations import OperationState, open_operation_store
from services.common.settings import get_settings
from services.common.storage import CheckpointStore, DatasetStore, open_object_store
from services.common.task_steps import (OperationSteps, preload_training_runtime, task_id as unit_task_id,
                                        training_settings, worker_module)
from services.online_codistiller.context import CoDistillerContext
from services.online_codistiller.plan import CoDistillationPlan
from services.online_codistiller.spec import SPEC

log = logging.getLogger(__name__)
TASK_NAME = f"{SPEC.task_prefix}.codistill"
STAGES = ("", "prepare", "stream", "publish", "done")


# In the worker's main process, before the pool forks (see task_steps.preload_training_runtime).
worker_init.connect(preload_training_runtime, weak=False)
pipeline = worker_module("services.online_codistiller.pipeline")


@lru_cache(maxsize=1)
def context() -> CoDistillerContext:
    """Stores of this worker process (built after the fork: connections are not shared)."""
    settings = get_settings()
    objects = open_object_store(settings)
    return CoDistillerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                              operations=open_operation_store(settings))


def load_plan(params: dict[str, Any]) -> CoDistillationPlan:
    """The plan stored in the operation record at Start."""
    return CoDistillationPlan.model_validate(params["plan"])


def discard(plan: CoDistillationPlan) -> None:  # noqa: ARG001 - every published pair is complete and stays
    """Nothing to clean: a co-distillation publishes only complete checkpoints, which outlive it."""


STEPS: OperationSteps[CoDistillationPlan] = OperationSteps(
    stages=STAGES, operations=lambda: context().operations, load_plan=load_plan, discard=discard)


def task_id(operation_id: str) -> str:
    return unit_task_id(operation_id, "codistill")


@shared_task(bind=True, base=STEPS.task_base(), name=TASK_NAME)
def codistill_task(self: Task, operation_id: str) -> dict[str, str]:
    ctx = context()
    lease, plan = STEPS.take_lease(self, operation_id, "prepare")
    try:
        report = STEPS.lease_reporter(self, lease)
        published = STEPS.run(self, lambda: pipeline().run_codistillation(
            ctx, plan, report, follow_poll_s=training_settings().follow_poll_s))
        result = {"name": published.name, "version": published.version}
        ctx.operations.transition(operation_id, {OperationState.RUNNING}, state=OperationState.SUCCEEDED,
                                  stage="done", result=result)
        log.info("operation succeeded", extra={"operation_id": operation_id, "checkpoint": published.ref})
        return result
    finally:
        lease.release()


def launch(app: Celery, operation_id: str) -> str:
    app.signature(TASK_NAME, args=(operation_id,), immutable=True).set(task_id=task_id(operation_id)).apply_async()
    return task_id(operation_id)
