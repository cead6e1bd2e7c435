"""Missing numerical values and grown vocabularies, on a real predictor process (KServe on loopback).

* A teacher prepared with a missing indicator for I1 (its spec reads I1, I2, I1__missing) and a student
  without one: a null (JSON), absent (V1) or NaN (gRPC) I1 is a missing value, scored as preparation
  makes it (`crossadapt.data.columns.numerical_with_missing`: 0 plus the indicator where the arm has one),
  equal over V1 REST, V2 REST and V2 gRPC and to the in-process models; NaN in I2, which no arm has an
  indicator for, stays INVALID_ARGUMENT naming I2.
* SwapArm to a student grown to a newer vocabulary version (`models.growth.grow_model`): values the
  grown version added map to their grown rows for the student only (the teacher's version reads them
  as <UNK>), and every response during the swap is entirely the old student (old vocabulary) or entirely
  the new one (new vocabulary), never a mix.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pyarrow as pa
import pytest
import torch
from predictor_world import (
    MODEL,
    PredictorProcess,
    grpc_outputs,
    random_rows,
    tiny_model,
    tiny_spec,
    tiny_vocabulary,
    v1_json,
    v2_grpc,
    v2_json,
)

from crossadapt.data.columns import numerical_with_missing
from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models.growth import grow_model
from services.common.model_io import publish_model
from services.common.proto import common_pb2, predictor_pb2
from services.common.storage import CheckpointStore, LocalObjectStore

TEACHER, STUDENT = 1, 2
NEW_SITES = ["site-new-1", "site-new-2", "site-new-3"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """mg/teacher (indicator for I1), mg/student v1 (no indicator) and v2 (grown: C1 + 3 values)."""
    root = tmp_path_factory.mktemp("missing-growth-store")
    checkpoints = CheckpointStore(LocalObjectStore(root))
    base = tiny_vocabulary()
    teacher_numerical = ("I1", "I2", "I1__missing")
    teacher = tiny_model(10, base, numerical=teacher_numerical)
    publish_model(checkpoints, "mg/teacher", teacher, feature_spec=tiny_spec(base, teacher_numerical),
                  vocab_hash=base.hash, vocabulary=base, owner="tests")
    student = tiny_model(11, base)
    publish_model(checkpoints, "mg/student", student, feature_spec=tiny_spec(base), vocab_hash=base.hash,
                  vocabulary=base, owner="tests")
    grown_vocabulary = base.grow({"C1": (pa.array(NEW_SITES), np.full(len(NEW_SITES), 50))})
    grown = tiny_model(11, base)
    torch.manual_seed(12)
    added = grow_model(grown, [grown_vocabulary.size(f) for f in grown_vocabulary.fields])
    assert added == {"C1": len(NEW_SITES)}
    with torch.no_grad():  # the new rows stand far from <UNK>'s, so a value read as <UNK> cannot pass
        grown.embedding.table.weight[-len(NEW_SITES):] += 2.0
    grown.eval()
    publish_model(checkpoints, "mg/student", grown, feature_spec=grown.spec, vocab_hash=grown_vocabulary.hash,
                  vocabulary=grown_vocabulary, extra={"vocab_version": grown_vocabulary.version}, owner="tests")
    return {"store": root, "teacher": teacher, "student": student, "grown": grown, "base": base,
            "grown_vocabulary": grown_vocabulary}


@pytest.fixture(scope="module")
def server(world: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> PredictorProcess:
    settings = {"teacher": "mg/teacher/v000001", "student": "mg/student/v000001", "student_weight": "0.5",
                "salt": "mg", "max_batch_rows": "64", "flush_interval_s": "3600", "metrics_refresh_s": "3600",
                "shadow_max_delay_s": "0.05"}
    process = PredictorProcess(tmp_path_factory.mktemp("mg-predictor"), world["store"], settings).start()
    yield process
    process.stop()


def prepared_probabilities(model: torch.nn.Module, vocabulary: Vocabulary, rows: dict[str, list]) -> np.ndarray:
    """The in-process model on the rows as data preparation makes them (None/NaN = missing)."""
    spec = model.spec
    categorical = np.stack([vocabulary.encode(f.name, pa.array(rows[f.name])) for f in spec.categorical],
                           axis=1).astype(np.int64)
    prepared = {n: numerical_with_missing(pa.array(rows[n], pa.float64()), log_transform=True)
                for n in ("I1", "I2")}
    numerical = np.stack([prepared[n][0] if n in prepared else prepared[n.removesuffix("__missing")][1]
                          .astype(np.float32) for n in spec.numerical], axis=1)
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(categorical), torch.from_numpy(numerical))).numpy()


def served(probabilities: np.ndarray, arms: np.ndarray, expected: dict[int, np.ndarray]) -> None:
    want = np.where(arms == STUDENT, expected[STUDENT], expected[TEACHER])
    assert set(arms.tolist()) == {TEACHER, STUDENT}
    np.testing.assert_allclose(probabilities, want, atol=2e-6)


def test_missing_values_are_prepared_like_training_over_every_protocol(server: PredictorProcess,
                                                                     world: dict[str, Any]) -> None:
    rows = random_rows(np.random.default_rng(21), 40)
    missing = np.arange(40) % 3 == 0
    with_nulls = {**rows, "I1": [None if m else v for m, v in zip(missing, rows["I1"])]}
    expected = {TEACHER: prepared_probabilities(world["teacher"], world["base"], with_nulls),
                STUDENT: prepared_probabilities(world["student"], world["base"], with_nulls)}
    filled = {TEACHER: prepared_probabilities(world["teacher"], world["base"], {**rows, "I1": list(
        np.where(missing, 0.0, rows["I1"]))})}
    # The indicator matters: a missing I1 is not a 0 for the teacher, which was prepared with one.
    assert np.abs(expected[TEACHER][missing] - filled[TEACHER][missing]).max() > 1e-4

    body = v2_json(with_nulls)
    body["inputs"][[i["name"] for i in body["inputs"]].index("I1")]["datatype"] = "FP64"
    v2 = httpx.post(f"{server.http}/v2/models/{MODEL}/infer", json=body, timeout=30)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: np.asarray(o["data"]) for o in v2.json()["outputs"]}
    served(outputs["probability"], outputs["arm"], expected)

    instances = v1_json(with_nulls)["instances"]
    for instance, is_missing in zip(instances, missing):
        if is_missing:
            del instance["I1"]  # V1: a field absent from a row is missing in that row
    v1 = httpx.post(f"{server.http}/v1/models/{MODEL}:predict", json={"instances": instances}, timeout=30)
    assert v1.status_code == 200, v1.text
    v1_arms = np.array([TEACHER if a == "teacher" else STUDENT for a in v1.json()["arms"]])
    served(np.asarray(v1.json()["predictions"]), v1_arms, expected)

    with_nan = {**rows, "I1": [float("nan") if m else v for m, v in zip(missing, rows["I1"])]}
    for raw in (False, True):
        reply = server.inference().ModelInfer(v2_grpc(with_nan, raw=raw), timeout=30)
        got = grpc_outputs(reply)
        served(got["probability"], got["arm"], expected)
        np.testing.assert_allclose(got["probability"], outputs["probability"], atol=1e-7)


def grpc_refusal(server: PredictorProcess, rows: dict[str, list]) -> tuple[grpc.StatusCode, str | None]:
    with pytest.raises(grpc.RpcError) as caught:
        server.inference().ModelInfer(v2_grpc(rows), timeout=30)
    return caught.value.code(), dict(caught.value.trailing_metadata() or ()).get("crossadapt-field")


def test_nan_in_a_field_without_an_indicator_is_refused_naming_it(server: PredictorProcess) -> None:
    rows = random_rows(np.random.default_rng(22), 4)
    rows["I2"] = [1.0, float("nan"), 2.0, 3.0]
    assert grpc_refusal(server, rows) == (grpc.StatusCode.INVALID_ARGUMENT, "I2")
    rows["I2"] = [1.0, None, 2.0, 3.0]
    reply = httpx.post(f"{server.http}/v2/models/{MODEL}/infer", json=v2_json(rows), timeout=30)
    assert reply.status_code == 400 and reply.json()["field"] == "I2", reply.text
    rows["I2"], rows["I1"] = [1.0, 2.0, 3.0, 4.0], [1.0, float("inf"), 2.0, 3.0]  # infinity is never "missing"
    assert grpc_refusal(server, rows) == (grpc.StatusCode.INVALID_ARGUMENT, "I1")


def swap_student(server: PredictorProcess, version: str) -> None:
    reply = server.admin().SwapArm(predictor_pb2.SwapArmRequest(
        arm=STUDENT, checkpoint=common_pb2.CheckpointRef(name="mg/student", version=version)), timeout=60)
    assert reply.arm.checkpoint.version == version


def test_swap_to_a_grown_student_swaps_its_vocabulary_with_it(server: PredictorProcess,
                                                             world: dict[str, Any]) -> None:
    rows = random_rows(np.random.default_rng(23), 48)
    rows["C1"] = [NEW_SITES[i % 3] if i % 2 else v for i, v in enumerate(rows["C1"])]
    new = np.arange(48) % 2 == 1
    base, grown_vocabulary = world["base"], world["grown_vocabulary"]
    teacher = prepared_probabilities(world["teacher"], base, rows)
    old = prepared_probabilities(world["student"], base, rows)
    grown = prepared_probabilities(world["grown"], grown_vocabulary, rows)
    as_unknown = prepared_probabilities(world["grown"], base, rows)  # the grown model, new values read as <UNK>
    assert (grown_vocabulary.encode("C1", pa.array(rows["C1"]))[new] >= base.size("C1")).all()  # ids past v1's rows
    assert np.abs(grown[new] - as_unknown[new]).min() > 1e-3  # a grown row scores unlike <UNK>
    request = v2_grpc(rows)

    def student_view() -> tuple[np.ndarray, np.ndarray, str]:
        reply = server.inference().ModelInfer(request, timeout=30)
        got = grpc_outputs(reply)
        return got["probability"], got["arm"], reply.parameters["student_checkpoint"].string_param

    probabilities, arms, checkpoint = student_view()
    assert checkpoint == "mg/student/v000001"
    served(probabilities, arms, {TEACHER: teacher, STUDENT: old})

    seen: list[tuple[np.ndarray, np.ndarray, str]] = []
    stop = threading.Event()
    failures: list[BaseException] = []

    def load() -> None:
        try:
            while not stop.is_set():
                seen.append(student_view())
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            failures.append(exc)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        swap_student(server, "v000002")
        probabilities, arms, checkpoint = student_view()
    finally:
        stop.set()
        worker.join(timeout=60)
    assert not failures and checkpoint == "mg/student/v000002"
    served(probabilities, arms, {TEACHER: teacher, STUDENT: grown})
    # Every response during the swap was one student with its own vocabulary, as its parameters say.
    for during_probabilities, during_arms, during_checkpoint in seen:
        student = grown if during_checkpoint == "mg/student/v000002" else old
        served(during_probabilities, during_arms, {TEACHER: teacher, STUDENT: student})
    swap_student(server, "v000001")  # back: the grown values read as <UNK> again
    probabilities, arms, _ = student_view()
    served(probabilities, arms, {TEACHER: teacher, STUDENT: old})


def test_a_checkpoint_published_with_a_newer_vocabulary_serves_the_version_it_names(world: dict[str, Any],
                                                                                   tmp_path: Path) -> None:
    """The loader resolves the version the manifest names, so ids never exceed the model's tables."""
    from services.common.errors import FailedPreconditionError
    from services.predictor.arms import named_version

    checkpoints = CheckpointStore(LocalObjectStore(tmp_path))
    base, grown_vocabulary = world["base"], world["grown_vocabulary"]
    old = publish_model(checkpoints, "mg/old", world["student"], feature_spec=tiny_spec(base),
                        vocab_hash=base.hash, vocabulary=base, owner="tests")
    assert named_version(grown_vocabulary, old).hash == base.hash and named_version(base, old) is base
    other = Vocabulary({"C1": pa.array(["x"])})
    with pytest.raises(FailedPreconditionError):
        named_version(other, old)
