"""A missing checkpoint: the predictor starts not ready, keeps looking, and turns ready when it appears."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from kserve.protocol.grpc import grpc_predict_v2_pb2 as v2_pb2
from predictor_world import (
    MODEL,
    PredictorProcess,
    publish_tiny,
    random_rows,
    tiny_model,
    tiny_spec,
    tiny_vocabulary,
    v2_grpc,
    v2_json,
)

from services.common.model_io import publish_model
from services.common.storage import CheckpointStore, LocalObjectStore
from services.local.stack import wait_for


def _not_ready_records(log: Path) -> list[dict]:
    records = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [r for r in records if r["logger"] == "services.predictor.server" and r["level"] == "WARNING"
            and r["msg"].startswith("predictor not ready")]


def test_a_missing_student_checkpoint_keeps_the_predictor_up_and_not_ready_until_it_appears(
        tmp_path: Path) -> None:
    checkpoints = CheckpointStore(LocalObjectStore(tmp_path / "store"))
    publish_tiny(checkpoints, "ctr/teacher", seed=1)
    predictor = PredictorProcess(tmp_path, tmp_path / "store", {
        "teacher": "ctr/teacher", "student": "ctr/student", "checkpoint_poll_s": "0.2",
        "checkpoint_poll_max_s": "0.4"}).start(wait_path="/v2/health/live")
    try:
        rows = random_rows(np.random.default_rng(3), 4)
        assert httpx.get(f"{predictor.http}/v2/health/ready", timeout=5).status_code == 503
        assert httpx.get(f"{predictor.http}/v2/models/{MODEL}/ready", timeout=5).status_code == 503
        inference = predictor.inference()
        assert inference.ServerReady(v2_pb2.ServerReadyRequest(), timeout=5).ready is False
        assert inference.ModelReady(v2_pb2.ModelReadyRequest(name=MODEL), timeout=5).ready is False
        refused = httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", json=v2_json(rows), timeout=5)
        assert refused.status_code == 503, refused.text
        arms = httpx.get(f"{predictor.http}/v2/models/{MODEL}/arms", timeout=5)
        assert arms.status_code == 503 and "not ready" in arms.text
        wait_for(lambda: len(_not_ready_records(predictor.log)) >= 2, 30, "two logged looks for the student")
        assert "no published checkpoint named 'ctr/student'" in _not_ready_records(predictor.log)[0]["msg"]
        assert predictor.proc.poll() is None

        publish_tiny(checkpoints, "ctr/student", seed=2)
        wait_for(lambda: httpx.get(f"{predictor.http}/v2/models/{MODEL}/ready", timeout=5).status_code == 200,
                 30, "the model to turn ready")
        assert httpx.get(f"{predictor.http}/v2/health/ready", timeout=5).status_code == 200
        assert inference.ModelReady(v2_pb2.ModelReadyRequest(name=MODEL), timeout=5).ready is True
        served = httpx.post(f"{predictor.http}/v2/models/{MODEL}/infer", json=v2_json(rows), timeout=30)
        assert served.status_code == 200, served.text
        assert inference.ModelInfer(v2_grpc(rows), timeout=30).outputs
    finally:
        assert predictor.stop() == 0


def test_stopping_while_the_teacher_checkpoint_is_missing_exits_cleanly(tmp_path: Path) -> None:
    predictor = PredictorProcess(tmp_path, tmp_path / "store", {"teacher": "ctr/teacher", "checkpoint_poll_s": "0.2"})
    predictor.start(wait_path="/v2/health/live")
    assert httpx.get(f"{predictor.http}/v2/health/ready", timeout=5).status_code == 503
    assert predictor.stop() == 0


def test_a_checkpoint_that_cannot_serve_still_fails_the_start(tmp_path: Path) -> None:
    """Only a missing checkpoint is waited for: one without its vocabulary will never serve, so exit 1 naming it."""
    checkpoints = CheckpointStore(LocalObjectStore(tmp_path / "store"))
    vocabulary = tiny_vocabulary()
    publish_model(checkpoints, "ctr/novocab", tiny_model(4, vocabulary), feature_spec=tiny_spec(vocabulary),
                  vocab_hash=vocabulary.hash)
    predictor = PredictorProcess(tmp_path, tmp_path / "store", {"teacher": "ctr/novocab"})
    # The server may answer /v2/health/live for a moment before the load fails, so the start may or may not
    # see the exit: what must hold is the exit code and the reason in the log.
    with contextlib.suppress(RuntimeError):
        predictor.start(wait_path="/v2/health/live", timeout=60)
    assert predictor.proc.wait(timeout=30) == 1
    assert "published without a vocabulary" in predictor.log.read_text()
