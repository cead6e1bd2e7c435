"""Benchmark: the offline distillation's training in a Celery worker vs in this process, on the same inputs.

    python -m services.offline_distiller.bench --data DIR --teacher DIR [--rows 16000] [--repeats 2] [--json PATH]

DIR: a prepared dataset and its teacher checkpoint, e.g. those of `crossadapt switch --config
configs/demo.yaml --out runs/demo` (runs/demo/data/criteo_like-400000-s0, runs/demo/teacher). The
sample is `--rows` rows of the training split with the teacher's logits (the demo's offline sample:
10% of 160k), the student the demo's FiBiNET-16 over the projector's tables, batch 128 (the demo's
fitted batch), one frozen and one joint epoch. Each repeat runs the task through an embedded
platform (`filesystem://` broker, one worker, the offline-distiller server) and then the same plan
in this process (threads as `crossadapt switch` sets them); reported: the training seconds each
(`train_total`, the core's own clock; `outside_steps_s` its part outside the epochs' loops: building the
trainer, in the worker also the work-in-progress checkpoint at the frozen phase's end),
the process's CPU seconds while training (`train_cpu_s`: against the wall seconds, how much of the
time the run had the 2 cores) and the operation's wall time from Start to SUCCEEDED.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

STUDENT = {"architecture": "fibinet", "embedding_dim": 16, "hidden": [256, 128, 16]}


def prepare(platform: Any, data: Path, teacher_dir: Path, rows: int) -> dict[str, Any]:
    """Teacher, projected student and sample in an embedded platform's store (the switch's first stages)."""
    from crossadapt.checkpoint import load_checkpoint
    from crossadapt.data import PreparedDataset
    from crossadapt.transfer.offline.distillation import cache_teacher_logits
    from services.common.model_io import publish_model, write_split
    from services.common.operations import FileOperationStore
    from services.common.storage import CheckpointStore, DatasetStore, open_object_store
    from services.projector import pipeline as projector

    dataset = PreparedDataset.open(data)
    teacher = load_checkpoint(teacher_dir).model
    objects = open_object_store(platform.settings())
    checkpoints, datasets = CheckpointStore(objects), DatasetStore(objects)
    spec, vocab_hash = dataset.feature_spec, dataset.vocab_hash
    published = publish_model(checkpoints, "bench/teacher", teacher, feature_spec=spec, vocab_hash=vocab_hash,
                              vocabulary=dataset.vocabulary)
    train = dataset.split("train")
    picked = np.sort(np.random.default_rng(0).choice(len(train), size=min(rows, len(train)), replace=False))
    sample = train.take(picked)
    sample = sample.with_teacher_logit(cache_teacher_logits(teacher, sample))
    write_split(datasets, "bench/sample", sample, spec, vocab_hash=vocab_hash)
    plan = projector.plan_projection(checkpoints, operation_id="bench-projection", teacher_name=published.name,
                                     teacher_version=published.version, student_name="bench/projected",
                                     width=STUDENT["embedding_dim"], seed=0, fields=[])
    plan = plan.model_copy(update={"student_version": checkpoints.claim_version("bench/projected",
                                                                                owner="bench-projection")})
    ctx = projector.ProjectorContext(checkpoints=checkpoints, operations=FileOperationStore(platform.workdir / "ops-projection"))
    projected = projector.run_in_process(ctx, plan)
    return {"teacher": published, "projected": projected, "rows": len(sample)}


def request(inputs: dict[str, Any], name: str) -> Any:
    from services.common.proto import common_pb2, offline_distiller_pb2

    return offline_distiller_pb2.StartDistillationRequest(
        student=common_pb2.CheckpointRef(name=inputs["projected"].name, version=inputs["projected"].version),
        teacher=common_pb2.CheckpointRef(name=inputs["teacher"].name, version=inputs["teacher"].version),
        sample=common_pb2.DatasetRef(name="bench/sample"), student_name=name,
        student_model=offline_distiller_pb2.ModelSpec(architecture=STUDENT["architecture"],
                                                      embedding_dim=STUDENT["embedding_dim"], hidden=STUDENT["hidden"]),
        config=offline_distiller_pb2.DistillationConfig(kd_weight=0.7, temperature=4.0, frozen_epochs=1, joint_epochs=1,
                                                        batch_size=128, seed=0), request_id=name)


def through_worker(platform: Any, inputs: dict[str, Any], name: str) -> dict[str, float]:
    from services.common.proto import common_pb2, operations_pb2
    from services.common.storage import CheckpointStore, open_object_store

    began = time.perf_counter()
    operation = platform.stub("offline-distiller").StartDistillation(request(inputs, name), timeout=60).operation
    final = operation
    for reply in platform.operations("offline-distiller").WatchOperation(
            operations_pb2.WatchOperationRequest(operation_id=operation.id), timeout=1800):
        final = reply.operation
    wall = time.perf_counter() - began
    if final.state != common_pb2.OPERATION_STATE_SUCCEEDED:
        raise RuntimeError(f"distillation ended {final.state}: {final.error}")
    checkpoints = CheckpointStore(open_object_store(platform.settings()))
    stages = checkpoints.resolve(name).manifest.extra["stage_seconds"]
    return {"train_s": stages["train_total"], "train_cpu_s": stages.get("train_cpu"),
            "outside_steps_s": round(stages["train_total"] - stages.get("frozen", 0.0) - stages.get("joint", 0.0), 3),
            "operation_s": round(wall, 2), "threads": checkpoints.resolve(name).manifest.extra.get("torch_threads")}


def in_process(platform: Any, inputs: dict[str, Any], name: str) -> dict[str, float]:
    """The same plan as the task's, trained here (load_inputs, train): no Celery, no reports, no checkpoints."""
    import torch

    from crossadapt.training import configure_threads, preload_optimizer_runtime
    from services.common.operations import FileOperationStore
    from services.common.storage import CheckpointStore, DatasetStore, open_object_store
    from services.offline_distiller import pipeline
    from services.offline_distiller.context import DistillerContext
    from services.offline_distiller.plan import plan_distillation

    configure_threads()  # as `crossadapt switch` does
    preload_optimizer_runtime()
    objects = open_object_store(platform.settings())
    ctx = DistillerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                                    operations=FileOperationStore(platform.workdir / "ops-in-process"))
    began = time.perf_counter()
    plan = plan_distillation(ctx.checkpoints, ctx.datasets, request(inputs, name), f"in-process-{name}")
    inputs = pipeline.load_inputs(ctx, plan)
    cpu = time.process_time()
    _, result = pipeline.train(plan, inputs, None)
    cpu = time.process_time() - cpu
    return {"train_s": round(result.seconds, 3), "train_cpu_s": round(cpu, 3),
            "outside_steps_s": round(result.seconds - sum(phase.seconds for phase in result.phases), 3),
            "operation_s": round(time.perf_counter() - began, 2), "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=16_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    from services.local.stack import LocalPlatform

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="crossadapt-bench-offline-") as tmp:
        work = Path(tmp)
        platform = LocalPlatform.embedded(work)
        inputs = prepare(platform, args.data, args.teacher, args.rows)
        with platform:
            platform.start(workers=("w1",), servers=("offline-distiller",), queue_names=("offline-distiller",))
            for repeat in range(args.repeats):
                worker = through_worker(platform, inputs, f"bench/student-w{repeat}")
                here = in_process(platform, inputs, f"bench/student-p{repeat}")
                runs.append({"worker": worker, "in_process": here,
                             "ratio": round(worker["train_s"] / here["train_s"], 2)})
                print(json.dumps(runs[-1]), flush=True)
    report = {"rows": inputs["rows"], "student": STUDENT, "batch_size": 128, "runs": runs,
              "load_avg": os.getloadavg(), "cores": os.cpu_count()}
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
