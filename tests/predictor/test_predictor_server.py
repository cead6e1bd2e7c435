"""The predictor process end to end (real KServe ModelServer on loopback; real HTTP and gRPC clients).

Answers over V1 REST, V2 REST and V2 gRPC (typed and raw contents) equal the in-process models; the split is
sticky and monotone; labels join kept scores, and per-arm figures equal sklearn's on the same rows; the
exposure log lands in the store with both scores; Prometheus shows the traffic and figures.
"""

from __future__ import annotations

import time
from typing import Any

import grpc
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
    tiny_vocabulary,
    v1_json,
    v2_grpc,
    v2_json,
)
from sklearn.metrics import log_loss, roc_auc_score

from services.common.model_io import load_model, load_vocabulary
from services.common.proto import common_pb2, predictor_pb2
from services.common.storage import CheckpointStore, DatasetStore, LocalObjectStore
from services.predictor.routing import reference_bucket

TEACHER, STUDENT = 1, 2


def set_split(predictor: PredictorProcess, weight: float, salt: str) -> None:
    split = predictor_pb2.Split(student_weight=weight, salt=salt)
    reply = predictor.admin().SetSplit(predictor_pb2.SetSplitRequest(split=split), timeout=10)
    assert reply.split == split


def expected_arms(users: list[str], weight: float, salt: str) -> np.ndarray:
    return np.array([STUDENT if reference_bucket(u, salt) < round(weight * 10_000) else TEACHER for u in users])


def current_models(predictor: PredictorProcess, checkpoints: CheckpointStore) -> dict[int, Any]:
    """The in-process models of the checkpoints the server reports it serves."""
    metrics = predictor.admin().GetArmMetrics(predictor_pb2.GetArmMetricsRequest(), timeout=30)
    return {arm: load_model(checkpoints, m.checkpoint.name, m.checkpoint.version)[0]
            for arm, m in ((TEACHER, metrics.teacher), (STUDENT, metrics.student))}


def expected_scores(models: dict[int, Any], rows: dict[str, list]) -> dict[int, np.ndarray]:
    vocabulary = tiny_vocabulary()
    return {arm: model_probabilities(model, vocabulary, rows) for arm, model in models.items()}


def swap(predictor: PredictorProcess, arm: int, name: str, version: str = "") -> predictor_pb2.SwapArmResponse:
    return predictor.admin().SwapArm(predictor_pb2.SwapArmRequest(
        arm=arm, checkpoint=common_pb2.CheckpointRef(name=name, version=version)), timeout=60)


def test_every_protocol_answers_what_the_in_process_models_say(predictor: PredictorProcess,
                                                               checkpoints: CheckpointStore) -> None:
    set_split(predictor, 0.5, "protocols")
    rows = random_rows(np.random.default_rng(1), 24, unknown_share=0.25)
    arms = expected_arms(rows["user_id"], 0.5, "protocols")
    assert 0 < (arms == STUDENT).sum() < len(arms)
    scores = expected_scores(current_models(predictor, checkpoints), rows)
    expected = np.where(arms == STUDENT, scores[STUDENT], scores[TEACHER])

    v1 = httpx.post(f"{predictor.http}/v1/models/{MODEL}:predict", json=v1_json(rows), timeout=30)
    assert v1.status_code == 200, v1.text
    assert np.allclose(v1.json()["predictions"], expected, atol=1e-6)
    assert v1.json()["arms"] == ["student" if a == STUDENT else "teacher" for a in arms]

    v2 = httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", json=v2_json(rows, "rest-1"), timeout=30)
    assert v2.status_code == 200, v2.text
    outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
    assert np.allclose(outputs["probability"], expected, atol=1e-6) and outputs["arm"] == arms.tolist()
    assert v2.json()["id"] == "rest-1"
    assert v2.json()["parameters"]["student_rows"] == int((arms == STUDENT).sum())

    for raw in (False, True):  # typed contents, and raw_input_contents (binary outputs come back)
        reply = predictor.inference().ModelInfer(v2_grpc(rows, raw=raw, request_id=f"grpc-{raw}"), timeout=30)
        got = grpc_outputs(reply)
        assert np.allclose(got["probability"], expected, atol=1e-6) and got["arm"].tolist() == arms.tolist()
        assert bool(reply.raw_output_contents) == raw and reply.id == f"grpc-{raw}"


def test_a_user_keeps_its_arm_and_a_higher_weight_only_moves_teacher_users(predictor: PredictorProcess) -> None:
    users = [f"sticky-{i}" for i in range(60)]
    rows = {**random_rows(np.random.default_rng(2), 60), "user_id": users}

    def arms() -> np.ndarray:
        reply = predictor.inference().ModelInfer(v2_grpc(rows), timeout=30)
        return grpc_outputs(reply)["arm"]

    set_split(predictor, 0.3, "sticky")
    first, again = arms(), arms()
    assert first.tolist() == again.tolist() == expected_arms(users, 0.3, "sticky").tolist()
    set_split(predictor, 0.7, "sticky")
    after = arms()
    assert not ((first == STUDENT) & (after == TEACHER)).any()  # nobody moves back to the teacher
    assert ((first == TEACHER) & (after == STUDENT)).any()
    assert after.tolist() == expected_arms(users, 0.7, "sticky").tolist()


def wait_for_shadow(predictor: PredictorProcess, rows: int, timeout: float = 30) -> predictor_pb2.GetArmMetricsResponse:
    deadline = time.monotonic() + timeout
    while True:
        metrics = predictor.admin().GetArmMetrics(predictor_pb2.GetArmMetricsRequest(), timeout=30)
        if metrics.teacher.scored_rows >= rows and metrics.student.scored_rows >= rows:
            return metrics
        assert time.monotonic() < deadline, f"shadow scores missing: {metrics}"
        time.sleep(0.1)


def test_labels_join_and_figures_equal_sklearn_on_the_same_rows(predictor: PredictorProcess,
                                                                 checkpoints: CheckpointStore) -> None:
    admin = predictor.admin()
    # Reloading the teacher starts a fresh window (figures count rows since the last swap).
    admin.SwapArm(predictor_pb2.SwapArmRequest(arm=TEACHER, checkpoint=common_pb2.CheckpointRef(
        name="ctr/teacher", version="v000001")), timeout=60)
    set_split(predictor, 0.5, "figures")
    rng = np.random.default_rng(3)
    batches = [random_rows(rng, 50, unknown_share=0.1) for _ in range(12)]
    for index, rows in enumerate(batches):
        rows["row_id"] = [f"fig-{index}-{i}" for i in range(50)]
        reply = httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", json=v2_json(rows), timeout=30)
        assert reply.status_code == 200, reply.text
    rows = {k: sum((b[k] for b in batches), []) for k in batches[0]}
    total = len(rows["row_id"])
    wait_for_shadow(predictor, total)

    scores = expected_scores(current_models(predictor, checkpoints), rows)
    labels = (rng.random(total) < scores[TEACHER]).astype(float)  # the teacher is calibrated by construction
    half = total // 2
    rest = httpx.post(f"{predictor.http}/v2/models/{MODEL}/feedback", timeout=30,
                      json={"row_ids": rows["row_id"][:half] + ["nobody"], "labels": labels[:half].tolist() + [1]})
    assert rest.status_code == 200 and rest.json() == {"matched": half, "unknown": 1}
    by_grpc = admin.SubmitFeedback(predictor_pb2.SubmitFeedbackRequest(
        row_ids=rows["row_id"][half:], labels=labels[half:].tolist()), timeout=30)
    assert (by_grpc.matched, by_grpc.unknown) == (total - half, 0)

    metrics = admin.GetArmMetrics(predictor_pb2.GetArmMetricsRequest(window_seconds=0), timeout=60)
    arms = expected_arms(rows["user_id"], 0.5, "figures")
    unknown = sum(v.startswith("site-new") for v in rows["C1"])
    for arm, figures in ((TEACHER, metrics.teacher), (STUDENT, metrics.student)):
        p = scores[arm]
        assert (figures.served_rows, figures.scored_rows, figures.labelled_rows) == ((arms == arm).sum(), total, total)
        assert figures.auc == pytest.approx(roc_auc_score(labels, p), abs=1e-6)
        assert figures.logloss == pytest.approx(log_loss(labels, np.clip(p, 1e-7, 1 - 1e-7)), abs=1e-6)
        assert figures.pcoc == pytest.approx(p.sum() / labels.sum(), rel=1e-5)
        assert figures.unknown_values == unknown
    assert metrics.paired_rows == total and metrics.split.salt == "figures"
    delta = roc_auc_score(labels, scores[STUDENT]) - roc_auc_score(labels, scores[TEACHER])
    assert metrics.delta_auc.estimate == pytest.approx(delta, abs=1e-6)
    for interval in (metrics.delta_auc, metrics.delta_logloss, metrics.student_pcoc, metrics.teacher_pcoc):
        assert interval.lower <= interval.estimate <= interval.upper and interval.level == 0.95
    over_rest = httpx.get(f"{predictor.http}/v2/models/{MODEL}/arms", params={"window_seconds": 3600}, timeout=60)
    assert over_rest.status_code == 200 and over_rest.json()["paired_rows"] == str(total)


def test_the_exposure_log_lands_in_the_store_with_both_scores(predictor: PredictorProcess,
                                                              checkpoints: CheckpointStore) -> None:
    set_split(predictor, 0.5, "exposures")
    rows = random_rows(np.random.default_rng(4), 40)
    rows["row_id"] = [f"exp-{i}" for i in range(40)]
    assert httpx.post(f"{predictor.http}/v1/models/{MODEL}:predict", json=v1_json(rows), timeout=30).status_code == 200
    wait_for_shadow(predictor, 40)
    flushed = predictor.admin().FlushExposureLog(predictor_pb2.FlushExposureLogRequest(), timeout=60)
    assert flushed.rows >= 40 and flushed.partitions and flushed.dataset.startswith(f"exposures/{MODEL}/")

    datasets = DatasetStore(LocalObjectStore(predictor.store))
    table = pa.Table.from_batches([b for b, _ in datasets.read(flushed.dataset)])
    logged = table.filter(pa.compute.is_in(table["row_id"], pa.array(rows["row_id"]))).to_pydict()
    order = np.argsort(logged["row_id"])
    assert sorted(logged["row_id"]) == sorted(rows["row_id"])
    scores = expected_scores(current_models(predictor, checkpoints), rows)
    position = {r: i for i, r in enumerate(rows["row_id"])}
    index = [position[logged["row_id"][i]] for i in order]
    assert np.allclose(np.array(logged["teacher_score"])[order], scores[TEACHER][index], atol=1e-6)
    assert np.allclose(np.array(logged["student_score"])[order], scores[STUDENT][index], atol=1e-6)
    arms = expected_arms([rows["user_id"][i] for i in index], 0.5, "exposures")
    assert [logged["served_arm"][i] for i in order] == ["student" if a == STUDENT else "teacher" for a in arms]
    assert set(logged["teacher_checkpoint"]) == {"ctr/teacher/v000001"}


def test_an_arm_with_its_own_vocabulary_and_fewer_fields_serves_and_shadows(predictor: PredictorProcess,
                                                                           checkpoints: CheckpointStore) -> None:
    """The narrow student reads C2, C1 and I1 through its own vocabulary: it encodes separately, both when it
    serves and in the shadow, and ignores the fields it does not read."""
    narrow, published = load_model(checkpoints, "ctr/narrow")
    vocabulary = load_vocabulary(checkpoints, published)
    swap(predictor, STUDENT, "ctr/narrow")
    try:
        set_split(predictor, 0.5, "narrow")
        rows = random_rows(np.random.default_rng(8), 40)
        rows["row_id"] = [f"narrow-{i}" for i in range(40)]
        reply = httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", json=v2_json(rows), timeout=30)
        assert reply.status_code == 200, reply.text
        outputs = {o["name"]: np.array(o["data"]) for o in reply.json()["outputs"]}
        expected = model_probabilities(narrow, vocabulary, rows)
        student_rows = outputs["arm"] == STUDENT
        assert 0 < student_rows.sum() < 40
        assert np.allclose(outputs["probability"][student_rows], expected[student_rows], atol=1e-6)
        set_split(predictor, 0.0, "narrow")  # all rows to the teacher: the student encodes in the shadow worker
        only_shadow = random_rows(np.random.default_rng(9), 10)
        only_shadow["row_id"] = [f"narrow-shadow-{i}" for i in range(10)]
        assert httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", json=v2_json(only_shadow),
                          timeout=30).status_code == 200
        rows = {k: rows[k] + only_shadow[k] for k in rows}
        expected = model_probabilities(narrow, vocabulary, rows)
        wait_for_shadow(predictor, 50)
        flushed = predictor.admin().FlushExposureLog(predictor_pb2.FlushExposureLogRequest(), timeout=60)
        datasets = DatasetStore(LocalObjectStore(predictor.store))
        table = pa.Table.from_batches([b for b, _ in datasets.read(flushed.dataset)])
        logged = table.filter(pa.compute.is_in(table["row_id"], pa.array(rows["row_id"]))).to_pydict()
        by_id = dict(zip(logged["row_id"], logged["student_score"]))
        assert np.allclose([by_id[r] for r in rows["row_id"]], expected, atol=1e-6)  # served and shadow rows
        unknown = dict(zip(logged["row_id"], logged["student_unknown"]))
        assert [unknown[r] for r in rows["row_id"]] == [int(c1 not in ("site-3", "site-1")) + int(c2 not in (
            [f"ad-{i}" for i in range(4, 12)])) for c1, c2 in zip(rows["C1"], rows["C2"])]
    finally:
        swap(predictor, STUDENT, "ctr/student", "v000001")


def test_prometheus_shows_traffic_and_figures(predictor: PredictorProcess) -> None:
    rows = random_rows(np.random.default_rng(5), 10, unknown_share=0.5)
    predictor.inference().ModelInfer(v2_grpc(rows), timeout=30)
    deadline = time.monotonic() + 10
    while True:
        text = httpx.get(f"http://127.0.0.1:{predictor.metrics_port}/metrics", timeout=10).text
        if "crossadapt_predictor_arm_auc" in text or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert 'crossadapt_predictor_rows_total{arm="teacher",model="ctr",role="served"}' in text
    assert 'crossadapt_predictor_unknown_values_total{arm=' in text and 'field="C1"' in text
    assert 'crossadapt_predictor_arm_auc{arm="student",model="ctr"}' in text
    assert 'crossadapt_predictor_paired{bound="lower",figure="delta_auc",model="ctr"}' in text
    assert "crossadapt_predictor_student_weight" in text
    assert "crossadapt_grpc_requests_total" in text  # the shared interceptor counts inference calls too


# ---- one error table on both transports ---------------------------------------------------------
def _grpc_error(call) -> tuple[grpc.StatusCode, str | None]:  # noqa: ANN001
    with pytest.raises(grpc.RpcError) as caught:
        call()
    trailers = dict(caught.value.trailing_metadata() or ())
    return caught.value.code(), trailers.get("crossadapt-field")


def test_bad_inference_requests_are_invalid_argument_naming_the_field(predictor: PredictorProcess) -> None:
    rows = random_rows(np.random.default_rng(6), 3)
    missing = {k: v for k, v in rows.items() if k != "C2"}
    rest = httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", json=v2_json(missing), timeout=30)
    assert rest.status_code == 400 and rest.json()["field"] == "C2"
    assert _grpc_error(lambda: predictor.inference().ModelInfer(v2_grpc(missing), timeout=30)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "C2")
    unknown_model = httpx.post(f"{predictor.http}/v2/models/nope/infer", json=v2_json(rows), timeout=30)
    assert unknown_model.status_code == 400 and unknown_model.json()["field"] == "model_name"
    assert _grpc_error(lambda: predictor.inference().ModelInfer(v2_grpc(rows, model="nope"), timeout=30)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "model_name")
    nan_rows = {**rows, "I1": [float("nan"), 1.0, 2.0]}
    assert _grpc_error(lambda: predictor.inference().ModelInfer(v2_grpc(nan_rows), timeout=30)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "I1")
    big = random_rows(np.random.default_rng(7), 65)  # the server's limit is 64 rows
    assert httpx.post(f"{predictor.http}/v1/models/{MODEL}:predict", json=v1_json(big), timeout=30).status_code == 400
    malformed = grpc.insecure_channel(f"127.0.0.1:{predictor.grpc_port}").unary_unary(
        "/inference.GRPCInferenceService/ModelInfer", request_serializer=None, response_deserializer=None)
    assert _grpc_error(lambda: malformed(b"\x0a\xff\xff\xff", timeout=30)) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                                               "request")
    not_json = httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", content=b"{oops",
                          headers={"content-type": "application/json"}, timeout=30)
    assert not_json.status_code == 400


def test_bad_admin_calls_follow_the_error_table(predictor: PredictorProcess) -> None:
    admin = predictor.admin()
    assert _grpc_error(lambda: admin.SetSplit(predictor_pb2.SetSplitRequest(
        split=predictor_pb2.Split(student_weight=1.5)), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "split.student_weight")

    def swap(name: str, arm: int = STUDENT):  # noqa: ANN202
        return lambda: admin.SwapArm(predictor_pb2.SwapArmRequest(
            arm=arm, checkpoint=common_pb2.CheckpointRef(name=name)), timeout=60)

    assert _grpc_error(swap("ctr/missing")) == (grpc.StatusCode.NOT_FOUND, "name")
    assert _grpc_error(swap("ctr/wider")) == (grpc.StatusCode.FAILED_PRECONDITION, "C9")
    assert _grpc_error(swap("ctr/novocab")) == (grpc.StatusCode.FAILED_PRECONDITION, "checkpoint")
    assert _grpc_error(swap("ctr/student", arm=0)) == (grpc.StatusCode.INVALID_ARGUMENT, "arm")
    assert _grpc_error(lambda: admin.SubmitFeedback(predictor_pb2.SubmitFeedbackRequest(
        row_ids=["a"], labels=[0.5]), timeout=10)) == (grpc.StatusCode.INVALID_ARGUMENT, "labels")
    assert _grpc_error(lambda: admin.GetArmMetrics(predictor_pb2.GetArmMetricsRequest(window_seconds=-1),
                                                   timeout=10)) == (grpc.StatusCode.INVALID_ARGUMENT, "window_seconds")
    feedback = httpx.post(f"{predictor.http}/v2/models/{MODEL}/feedback", json={"row_ids": ["a"]}, timeout=10)
    assert feedback.status_code == 400 and feedback.json()["field"] == "labels"
    raw = grpc.insecure_channel(f"127.0.0.1:{predictor.admin_port}").unary_unary(
        "/crossadapt.v1.PredictorAdminService/SetSplit", request_serializer=None, response_deserializer=None)
    assert _grpc_error(lambda: raw(b"\xff\xff", timeout=10))[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert set(CATEGORICAL) <= {i["name"] for i in httpx.get(f"{predictor.http}/v2/models/{MODEL}").json()["inputs"]}
