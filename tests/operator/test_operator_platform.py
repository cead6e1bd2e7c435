"""The kopf operator against kmock, with the REAL local services and a REAL predictor on loopback.

The platform (`services.local.up.start_platform`: projector, sampler, drift detector, offline and
online distillers, their Celery worker, embedded broker and store) gets the tiny switch's teacher
and splits; `crossadapt serve predictor` serves that teacher. The test split is replayed as traffic
with delayed labels (the local rollout's `ReplayTraffic`) all along. Two ModelSwitch objects, one
after the other (a promoted student would take the teacher arm the other one's gate compares with):

* `broken`: trained on shuffled labels without distillation — its student scores noise, and its gate
  rolls it back: 100% of traffic on the teacher again;
* `good`: the ordinary switch — every stage runs on the services, and the gate promotes its student,
  which then serves on the teacher arm.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from operator_crd_schema import errors
from operator_harness import (
    Emulator,
    add_switch,
    declare_resources,
    phase_is,
    running_operator,
    status,
    switch,
    wait_for,
)

pytestmark = [pytest.mark.asyncio, pytest.mark.kmock(cls=Emulator), pytest.mark.timeout(400), pytest.mark.slow]

BACKEND_SERVICES = ["projector", "sampler", "drift-detector", "offline-distiller", "online-codistiller"]
ROLLOUT = {"steps": [50, 100], "timeouts": {"shadowSeconds": 600, "stepSeconds": 600},
           "gates": {"minLabels": 200, "maxAucDrop": 0.05, "maxLogLossRise": 0.05, "maxCalibrationBias": 0.3}}


def _spec(train: str, stream: str, kd_weight: float) -> dict[str, Any]:
    """The tiny switch's settings (configs/switch-tiny.yaml) as a ModelSwitch spec."""
    return {
        "teacher": {"checkpoint": "ctr/teacher"},
        "student": {"architecture": "fibinet", "embeddingDim": 16, "hidden": [64, 32, 16]},
        "data": {"train": train, "stream": stream},
        "offline": {"sampling": {"ratio": 0.3, "positiveRatio": 0.5, "temporalBlocks": 5},
                    "distillation": {"lambda": kd_weight, "temperature": 4.0, "frozenEpochs": 1, "jointEpochs": 1}},
        "optim": {"batchSize": 512, "embeddingLr": 0.0125, "denseLr": 0.001},
        "online": {"teacherUpdateInterval": 10, "drift": {"windows": 5, "bins": 20}},
        "rollout": ROLLOUT,
    }


@pytest.fixture(scope="module")
def world(tiny_switch: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The running platform with the teacher and the splits (also label-shuffled ones), and the predictor."""
    from crossadapt.data.prepared import PreparedDataset
    from operators.local_rollout.predictor import LocalPredictor, PublishedPair, publish_checkpoint
    from operators.local_rollout.traffic import log_transformed
    from services.common.model_io import write_split
    from services.common.storage import CheckpointStore, DatasetStore, open_object_store
    from services.local.up import start_platform

    workdir = tmp_path_factory.mktemp("operator-platform")
    dataset = PreparedDataset.open(next((tiny_switch / "data").glob("*/dataset.json")).parent)
    platform = start_platform(workdir / "platform", services=BACKEND_SERVICES)
    try:
        settings = platform.settings()
        objects = open_object_store(settings)
        teacher = publish_checkpoint(CheckpointStore(objects), "ctr/teacher", tiny_switch / "teacher",
                                     dataset.vocabulary, log_transformed(dataset))
        datasets, rng = DatasetStore(objects), np.random.default_rng(3)
        for split, name in (("train", "ctr/train"), ("online", "ctr/stream")):
            arrays = dataset.split(split)
            write_split(datasets, name, arrays, dataset.feature_spec, vocab_hash=dataset.vocab_hash, partitions=2)
            shuffled = replace(arrays, label=np.asarray(arrays.label)[rng.permutation(len(arrays))])  # clicks
            write_split(datasets, f"{name}-shuffled", shuffled, dataset.feature_spec,  # unrelated to the rows
                        vocab_hash=dataset.vocab_hash, partitions=2)
        # The predictor serves the teacher on both arms until a switch puts its student on the student arm.
        pair = PublishedPair(settings.local_store_dir, teacher, teacher)
        with LocalPredictor(pair, workdir / "predictor", bootstrap_replicates=50) as predictor:
            yield {"platform": platform, "predictor": predictor, "dataset": dataset, "teacher": teacher,
                   "store": CheckpointStore(objects), "tiny_switch": tiny_switch}
    finally:
        platform.stop()


class Traffic:
    """The test split replayed again and again (new row ids each pass) with delayed labels, in a thread."""

    def __init__(self, predictor: Any, dataset: Any) -> None:
        from operators.local_rollout.predictor import MODEL_NAME
        from operators.local_rollout.rollout import ReplayClients

        self.dataset, self.stop, self.failures, self.rows = dataset, threading.Event(), [], 0
        self.clients = ReplayClients(predictor.inference, predictor.http, MODEL_NAME)
        self.thread = threading.Thread(target=self._run, name="replay", daemon=True)

    def _run(self) -> None:
        from operators.local_rollout.traffic import ReplayTraffic

        try:
            for replay_pass in range(10_000):
                traffic = ReplayTraffic(self.dataset, "test", batch_rows=64, label_delay_s=300,
                                        row_id_prefix=f"pass{replay_pass}")
                for start in traffic.batches:
                    if self.stop.wait(0.01):  # ~4k rows a second at most: the predictor keeps up
                        return
                    self.clients.infer(traffic.request(start, self.clients.model_name))
                    sent = min(start + traffic.batch_rows, len(traffic))
                    self.clients.feedback(traffic.due_labels(traffic.clock_after(start), sent))
                    self.rows += sent - start
                self.clients.feedback(traffic.remaining_labels(len(traffic)))
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.failures.append(exc)

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        self.clients.close()


@pytest.fixture
def emulator(kmock: Emulator) -> Emulator:
    declare_resources(kmock)
    return kmock


def _clients(world: dict[str, Any]) -> Any:
    from operators.modelswitch.settings import OperatorSettings

    platform = world["platform"]
    return OperatorSettings(
        projector_address=platform.address("projector"), sampler_address=platform.address("sampler"),
        offline_distiller_address=platform.address("offline-distiller"),
        online_codistiller_address=platform.address("online-codistiller"),
        drift_detector_address=platform.address("drift-detector"), predictor_address=world["predictor"].admin,
        rpc_timeout_s=30).grpc_clients()


def _explain(emulator: Emulator, world: dict[str, Any], name: str) -> Callable[[], str]:
    """Where a switch that timed out stood: its status, and the end of every platform process's log."""
    from services.local.stack import log_tail

    def explain() -> str:
        logs = (f"--- {log.name}\n{log_tail(log, 15)}" for log in sorted(world["platform"].workdir.glob("*.log")))
        return "\n".join([f"status of {name}: {json.dumps(status(emulator, name), default=str)[:4000]}", *logs])

    return explain


def _arms(world: dict[str, Any]) -> Any:
    from operators.modelswitch.clients import GrpcPredictor

    return GrpcPredictor(world["predictor"].admin, 30).arm_metrics(1.0)


async def test_a_broken_student_is_rolled_back_and_a_good_one_promoted(
        emulator: Emulator, world: dict[str, Any], open_api_schema: dict[str, Any]) -> None:
    with Traffic(world["predictor"], world["dataset"]) as traffic:
        async with running_operator(emulator, _clients(world)):
            add_switch(emulator, "broken", _spec("ctr/train-shuffled", "ctr/stream-shuffled", kd_weight=0.0))
            await wait_for("broken: RolledBack", phase_is(emulator, "broken", "RolledBack", "Failed", "Promoted"),
                           timeout=180, explain=_explain(emulator, world, "broken"))
            broken = status(emulator, "broken")
            assert broken["phase"] == "RolledBack", broken.get("message")
            assert broken["reason"] == "GateBreached" and "ΔAUC upper bound" in broken["message"]
            assert broken["gate"]["deltaAuc"]["upper"] < -0.05 and broken["studentPercent"] == 0
            await wait_for("teacher restored", lambda: status(emulator, "broken")["rollout"].get("teacherRestored"))
            arms = _arms(world)
            assert arms.split.student_weight == 0.0
            assert f"{arms.teacher_checkpoint.name}/{arms.teacher_checkpoint.version}" == world["teacher"]

            add_switch(emulator, "good", _spec("ctr/train", "ctr/stream", kd_weight=0.7))
            await wait_for("good: Promoted", phase_is(emulator, "good", "Promoted", "Failed", "RolledBack"),
                           timeout=180, explain=_explain(emulator, world, "good"))
            assert status(emulator, "good")["phase"] == "Promoted", status(emulator, "good").get("message")
            await wait_for("promotion complete", lambda: status(emulator, "good")["rollout"].get("promotionComplete"))
        assert not traffic.failures, traffic.failures
    good = switch(emulator, "good")
    assert errors(open_api_schema, good) == []
    history = [(h["phase"], h.get("studentPercent")) for h in good["status"]["history"]]
    assert [phase for phase, _ in history] == ["Pending", "Projecting", "Sampling", "OfflineDistilling",
                                               "OnlineCoDistilling", "Shadow", "Canary", "Canary", "Promoted"]
    assert [percent for phase, percent in history if phase == "Canary"] == [50, 100]
    student = good["status"]["artifacts"]["student"]
    assert student["name"] == "modelswitch/ml/good/student"
    arms = _arms(world)  # the promoted student serves on the teacher arm, all traffic there
    assert (arms.teacher_checkpoint.name, arms.split.student_weight) == (student["name"], 0.0)
    assert traffic.rows > 0
    # Through the operator and the services, the same settings give the in-process switch's student.
    assert _test_auc(world, world["store"].resolve(student["name"], student["version"]).ref) == pytest.approx(
        _test_auc(world, None), abs=0.002)


def _test_auc(world: dict[str, Any], store_ref: str | None) -> float:
    """Test-split AUC of a published student (`name/version`), or of the tiny switch's own (None)."""
    import torch
    from sklearn.metrics import roc_auc_score

    from crossadapt.checkpoint import load_checkpoint
    from services.common.model_io import load_model

    if store_ref is None:
        model = load_checkpoint(world["tiny_switch"] / "student").model
    else:
        model = load_model(world["store"], *store_ref.rsplit("/", 1))[0]
    test = world["dataset"].split("test")
    with torch.no_grad():
        logits = model(torch.from_numpy(np.asarray(test.categorical, dtype=np.int64)),
                       torch.from_numpy(np.asarray(test.numerical)))
    return float(roc_auc_score(np.asarray(test.label), logits.numpy()))
