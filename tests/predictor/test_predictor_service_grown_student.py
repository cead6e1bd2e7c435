"""A student the online co-distiller grew, served by a real predictor process from raw values (#16).

The co-distiller's pipeline (as its worker runs it, on a local store) consumes a stream whose later
partitions are of a newer vocabulary version (C1 + 4 new sites), written with that version's values
(`write_split(vocabulary=)`). Its final student has grown tables and carries the grown vocabulary. The
predictor (KServe ModelServer on loopback), with that student on every cohort:

* maps the new sites to their grown rows: the scores equal the in-process grown model's on the grown
  vocabulary's ids, and differ from what the model says for them as `<UNK>`;
* counts none of them as unknown (its per-field unknown counter for the student does not rise), while
  a value no version holds still counts, so the counter is live.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from predictor_world import (
    CATEGORICAL,
    MODEL,
    PredictorProcess,
    grpc_outputs,
    model_probabilities,
    random_rows,
    tiny_model,
    tiny_spec,
    tiny_vocabulary,
    v2_grpc,
)

from crossadapt.data.arrays import SplitArrays
from services.common.model_io import load_model, load_vocabulary, publish_model, write_split
from services.common.operations import FileOperationStore
from services.common.proto import common_pb2
from services.common.proto import online_codistiller_pb2 as pb
from services.common.storage import CheckpointStore, DatasetStore, LocalObjectStore
from services.local.stack import wait_for
from services.online_codistiller.context import CoDistillerContext
from services.online_codistiller.pipeline import run_codistillation
from services.online_codistiller.plan import plan_codistillation

NEW_SITES = [f"site-grown-{i}" for i in range(4)]
STUDENT = 2
EPOCH = datetime(2026, 4, 1, tzinfo=timezone.utc)


def clicks(rows: int, sizes: list[int], seed: int, first_timestamp: int = 0) -> SplitArrays:
    """Rows over the tiny spec with ids below `sizes` (C1's newest ids frequent), clicks from a known model."""
    rng = np.random.default_rng(seed)
    categorical = np.stack([rng.integers(1, size, rows) for size in sizes], axis=1).astype(np.int64)
    often = rng.random(rows) < 0.4
    categorical[often, 0] = rng.integers(sizes[0] - len(NEW_SITES), sizes[0], int(often.sum()))  # the last C1 ids
    numerical = rng.standard_normal((rows, 2)).astype(np.float32)
    p = 1 / (1 + np.exp(-(np.sin(categorical[:, 0]) + 0.5 * numerical[:, 0] - 0.7)))
    return SplitArrays(categorical=categorical, numerical=numerical, label=(rng.random(rows) < p).astype(np.float32),
                       timestamp=np.arange(first_timestamp, first_timestamp + rows, dtype=np.int64),
                       prob=p.astype(np.float32))


@pytest.fixture(scope="module")
def grown_world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """g/teacher and g/student (version 1), a stream of a v1 partition then v2 ones, and the co-distiller's run."""
    root = tmp_path_factory.mktemp("grown-store")
    objects = LocalObjectStore(root)
    ctx = CoDistillerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                             operations=FileOperationStore(root.parent / "grown-ops"))
    base = tiny_vocabulary()
    grown = base.grow({"C1": (pa.array(NEW_SITES), np.full(len(NEW_SITES), 20))})
    for name, seed in (("g/teacher", 0), ("g/student", 1)):
        publish_model(ctx.checkpoints, name, tiny_model(seed, base), feature_spec=tiny_spec(base),
                      vocab_hash=base.hash, vocabulary=base, owner="tests")
    v1_sizes = [base.size(f) for f in base.fields]
    write_split(ctx.datasets, "g/stream", clicks(200, v1_sizes, seed=2), tiny_spec(base), start=EPOCH,
                vocabulary=base)
    write_split(ctx.datasets, "g/stream", clicks(600, [grown.size(f) for f in grown.fields], seed=3, first_timestamp=200),
                tiny_spec(grown), partitions=3, start=EPOCH.replace(hour=1), vocabulary=grown)
    request = pb.StartCoDistillationRequest(
        student=common_pb2.CheckpointRef(name="g/student"), teacher=common_pb2.CheckpointRef(name="g/teacher"),
        stream=common_pb2.DatasetRef(name="g/stream"), student_name="g-op/student", teacher_name="g-op/teacher",
        config=pb.CoDistillationConfig(batch_size=50, checkpoint_every_batches=4, teacher_update_interval=2,
                                       grow_vocabulary=True, seed=3))
    student = run_codistillation(ctx, plan_codistillation(ctx.checkpoints, ctx.datasets, request, "g-op"),
                                 lambda *_, **__: None)
    model, _ = load_model(ctx.checkpoints, student.name, student.version)
    return {"store": root, "checkpoints": ctx.checkpoints, "student": student, "model": model, "base": base,
            "grown": grown}


@pytest.fixture(scope="module")
def grown_server(grown_world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> PredictorProcess:
    student = grown_world["student"]
    settings = {"teacher": "g/teacher/v000001", "student": student.ref, "student_weight": "1.0", "salt": "g",
                "max_batch_rows": "64", "flush_interval_s": "3600", "metrics_refresh_s": "3600"}
    process = PredictorProcess(tmp_path_factory.mktemp("grown-predictor"), grown_world["store"], settings).start()
    yield process
    process.stop()


def unknown_c1(server: PredictorProcess) -> float:
    """The predictor's count of C1 values the student's vocabulary did not know (0 before any)."""
    text = httpx.get(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=30).text
    found = re.search(r'^crossadapt_predictor_unknown_values_total\{(?=[^}]*arm="student")(?=[^}]*field="C1")'
                      r'[^}]*\}\s+(\S+)$', text, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


def test_the_service_grown_student_is_served_from_raw_values_through_its_grown_rows(
        grown_server: PredictorProcess, grown_world: dict[str, Any]) -> None:
    student, model, base, grown = (grown_world[k] for k in ("student", "model", "base", "grown"))
    assert student.manifest.extra["has_vocabulary"] and student.manifest.vocab_hash == grown.hash
    assert model.spec.categorical[0].vocab_size == grown.size("C1") == base.size("C1") + len(NEW_SITES)
    carried = load_vocabulary(grown_world["checkpoints"], student)
    assert carried.encode("C1", pa.array(NEW_SITES)).tolist() == list(range(base.size("C1"), grown.size("C1")))

    rows = random_rows(np.random.default_rng(31), 32)
    rows["C1"] = [NEW_SITES[i % len(NEW_SITES)] for i in range(32)]  # every row a new site
    expected = model_probabilities(model, grown, rows)
    as_unknown = model_probabilities(model, base, rows)  # the same model reading the new sites as <UNK>
    assert np.abs(expected - as_unknown).max() > 1e-3  # a grown row scores unlike <UNK>: the check can fail

    assert set(CATEGORICAL["C1"]).isdisjoint(NEW_SITES)
    before = unknown_c1(grown_server)
    got = grpc_outputs(grown_server.inference().ModelInfer(v2_grpc(rows), timeout=30))
    assert set(got["arm"].tolist()) == {STUDENT}
    np.testing.assert_allclose(got["probability"], expected, atol=2e-6)

    # Then 3 rows of a site no version holds: the counter must end exactly 3 up, not 3 + 32 (the new
    # sites counted too). Waiting for the 3 (bounded) makes the read independent of when it is updated.
    unseen = {**rows, "C1": ["site-never-seen"] * 3 + rows["C1"][3:]}
    got = grpc_outputs(grown_server.inference().ModelInfer(v2_grpc(unseen), timeout=30))
    np.testing.assert_allclose(got["probability"], model_probabilities(model, grown, unseen), atol=2e-6)
    wait_for(lambda: unknown_c1(grown_server) >= before + 3, 60, "the unknown counter", interval=0.2)
    assert unknown_c1(grown_server) == before + 3
