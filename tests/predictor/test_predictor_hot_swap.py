"""Hot swap under a concurrent load (REST and gRPC clients): zero failed requests, the new checkpoint answers
right after each swap; then SIGTERM: shadow work drains and every served row lands in the exposure log.

This predictor reads its checkpoints from and writes its exposure log to S3 (SeaweedFS on loopback)."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator

import grpc
import httpx
import numpy as np
import pyarrow as pa
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc  # noqa: F401 - imported before the clients start
from predictor_world import MODEL, PredictorProcess, publish_tiny, random_rows, v2_grpc, v2_json

from services.common.proto import common_pb2, predictor_pb2
from services.common.storage import CheckpointStore, DatasetStore, ObjectStore
from services.local.stack import S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY, SeaweedS3

DATASET = "exposures/ctr/hot-swap"
PREFIX = "predictor-hot-swap"


@pytest.fixture(scope="module")
def s3_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SeaweedS3, ObjectStore]]:
    """SeaweedFS with ctr/teacher v1 and ctr/student v1 (MLP) and v2 (DeepFM) published into it."""
    from services.common.storage.s3 import S3ObjectStore

    seaweed = SeaweedS3.start(tmp_path_factory.mktemp("seaweed"))
    try:
        objects = S3ObjectStore.connect(f"s3://{S3_BUCKET}/{PREFIX}", endpoint=seaweed.endpoint,
                                        access_key=S3_ACCESS_KEY, secret_key=S3_SECRET_KEY)
        checkpoints = CheckpointStore(objects)
        publish_tiny(checkpoints, "ctr/teacher", seed=0)
        publish_tiny(checkpoints, "ctr/student", seed=1)
        publish_tiny(checkpoints, "ctr/student", seed=2, architecture="deepfm")
        yield seaweed, objects
    finally:
        seaweed.stop()


@pytest.fixture(scope="module")
def swapping_predictor(s3_store: tuple[SeaweedS3, ObjectStore],
                       tmp_path_factory: pytest.TempPathFactory) -> Iterator[PredictorProcess]:
    seaweed, _ = s3_store
    settings = {"teacher": "ctr/teacher/v000001", "student": "ctr/student/v000001", "student_weight": "0.5",
                "max_batch_rows": "64", "flush_interval_s": "3600", "exposure_dataset": DATASET}
    store_env = {"CROSSADAPT_STORE_URL": f"s3://{S3_BUCKET}/{PREFIX}", "CROSSADAPT_S3_ENDPOINT": seaweed.endpoint,
                 "CROSSADAPT_S3_ACCESS_KEY": S3_ACCESS_KEY, "CROSSADAPT_S3_SECRET_KEY": S3_SECRET_KEY}
    process = PredictorProcess(tmp_path_factory.mktemp("hot-swap"), None, settings, store_env).start()
    yield process
    process.stop()


class Load:
    """Clients sending 8-row requests in a loop (each with its own row ids) and recording every outcome."""

    def __init__(self, predictor: PredictorProcess) -> None:
        self.predictor = predictor
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.answers: list[tuple[float, str, str]] = []  # (time, client, student checkpoint that answered)
        self.row_ids: list[str] = []
        self.lock = threading.Lock()

    def _rows(self, client: str, number: int) -> dict[str, list]:
        rows = random_rows(np.random.default_rng(number), 8)
        rows["row_id"] = [f"{client}-{number}-{i}" for i in range(8)]
        return rows

    def rest(self, client: str) -> None:
        with httpx.Client(timeout=30) as http:
            number = 0
            while not self.stop.is_set():
                rows = self._rows(client, number)
                try:
                    reply = http.post(f"{self.predictor.http}/v2/models/{MODEL}/infer", json=v2_json(rows))
                    ok = reply.status_code == 200
                    outcome = reply.json()["parameters"]["student_checkpoint"] if ok else reply.text
                except httpx.HTTPError as exc:
                    ok, outcome = False, repr(exc)
                self._record(client, ok, outcome, rows["row_id"])
                number += 1

    def grpc(self, client: str) -> None:
        stub = self.predictor.inference()
        number = 0
        while not self.stop.is_set():
            rows = self._rows(client, number)
            try:
                reply = stub.ModelInfer(v2_grpc(rows), timeout=30)
                ok, outcome = True, reply.parameters["student_checkpoint"].string_param
            except grpc.RpcError as exc:
                ok, outcome = False, f"{exc.code()}: {exc.details()}"
            self._record(client, ok, outcome, rows["row_id"])
            number += 1

    def _record(self, client: str, ok: bool, outcome: str, row_ids: list[str]) -> None:
        with self.lock:
            if ok:
                self.answers.append((time.monotonic(), client, outcome))
                self.row_ids.extend(row_ids)
            else:
                self.failures.append(outcome)


def test_hot_swaps_under_load_fail_no_request_and_shutdown_keeps_every_row(
        swapping_predictor: PredictorProcess, s3_store: tuple[SeaweedS3, ObjectStore]) -> None:
    predictor = swapping_predictor
    load = Load(predictor)
    clients = [threading.Thread(target=load.rest, args=(f"rest{i}",)) for i in range(2)]
    clients += [threading.Thread(target=load.grpc, args=(f"grpc{i}",)) for i in range(2)]
    for client in clients:
        client.start()
    admin = predictor.admin()
    swaps = [(2, "ctr/student", "v000002"), (2, "ctr/student", "v000001"), (1, "ctr/teacher", "v000001"),
             (2, "ctr/student", "v000002")]
    swapped_at = []
    try:
        time.sleep(1.0)
        for arm, name, version in swaps:
            reply = admin.SwapArm(predictor_pb2.SwapArmRequest(
                arm=arm, checkpoint=common_pb2.CheckpointRef(name=name, version=version)), timeout=60)
            assert reply.arm.checkpoint.version == version and reply.arm.served_rows == 0
            swapped_at.append(time.monotonic())
            time.sleep(0.7)
    finally:
        load.stop.set()
        for client in clients:
            client.join(60)
    assert load.failures == [], load.failures[:5]
    during = Counter(client[:4] for at, client, _ in load.answers if swapped_at[0] - 0.7 < at < swapped_at[-1])
    assert during["rest"] >= 20 and during["grpc"] >= 20, during  # both protocols were busy while swapping
    seen = Counter(checkpoint for _, _, checkpoint in load.answers)
    assert seen["ctr/student/v000001"] and seen["ctr/student/v000002"], seen
    # A request that started after the last swap completed is answered by the new student.
    after = [checkpoint for at, _, checkpoint in load.answers if at > swapped_at[-1] + 0.05]
    assert after and set(after) == {"ctr/student/v000002"}

    assert predictor.stop(signal.SIGTERM) == 0
    datasets = DatasetStore(s3_store[1])
    table = pa.Table.from_batches([batch for batch, _ in datasets.read(DATASET)])
    assert sorted(table["row_id"].to_pylist()) == sorted(load.row_ids)  # every served row, once
    assert table["teacher_score"].null_count == 0 and table["student_score"].null_count == 0
    assert set(table["student_checkpoint"].to_pylist()) == {"ctr/student/v000001", "ctr/student/v000002"}
