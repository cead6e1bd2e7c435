"""A real predictor on loopback for a local rollout: checkpoints published into a local store, and
`crossadapt serve predictor` (KServe REST + V2 gRPC, admin gRPC) started on free ports.

Both checkpoints are published with the dataset's `preprocessing.log_transform`, so the predictor
transforms the replay's raw numbers (`traffic.raw_numbers`) as the dataset's preparation did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_NAME = "ctr"


@dataclass(frozen=True)
class PublishedPair:
    store: Path
    teacher: str  # "name/version"
    student: str


def publish_checkpoint(checkpoints: Any, name: str, folder: Path, vocabulary: Any, log_transform: bool) -> str:
    """Publish a core checkpoint folder as the next version of `name` with the dataset's vocabulary and
    numeric transform (what the predictor needs to serve raw values); returns its `name/version`."""
    from crossadapt.checkpoint import load_checkpoint
    from services.common.model_io import publish_model

    loaded = load_checkpoint(folder, expected_vocab_hash=vocabulary.hash)
    manifest = loaded.manifest
    extra = {**manifest.extra, "preprocessing": {**(manifest.extra.get("preprocessing") or {}),
                                                 "log_transform": log_transform}}
    return publish_model(checkpoints, name, loaded.model, feature_spec=manifest.feature_spec,
                         vocab_hash=manifest.vocab_hash, vocabulary=vocabulary, parent=str(Path(folder).resolve()),
                         metrics=manifest.metrics, extra=extra, owner="rollout").ref


def publish_for_replay(store: Path, teacher_dir: Path, student_dir: Path, vocabulary: Any,
                       log_transform: bool) -> PublishedPair:
    """Both checkpoints into a local store at `store`, as `rollout/teacher` and `rollout/student`."""
    from services.common.storage import CheckpointStore, LocalObjectStore

    checkpoints = CheckpointStore(LocalObjectStore(store))
    teacher = publish_checkpoint(checkpoints, "rollout/teacher", teacher_dir, vocabulary, log_transform)
    student = publish_checkpoint(checkpoints, "rollout/student", student_dir, vocabulary, log_transform)
    return PublishedPair(store, teacher, student)


@dataclass
class LocalPredictor:
    """A `crossadapt serve predictor` process; `admin`, `inference` and `http` are loopback addresses."""

    pair: PublishedPair
    workdir: Path
    cohort_key: str = "user_id"
    salt: str = ""
    bootstrap_replicates: int = 200
    ports: dict[str, int] = field(default_factory=dict)
    process: Any = None

    @property
    def admin(self) -> str:
        return f"127.0.0.1:{self.ports['admin']}"

    @property
    def inference(self) -> str:
        return f"127.0.0.1:{self.ports['grpc']}"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.ports['http']}"

    @property
    def log(self) -> Path:
        return self.workdir / "predictor.log"

    def start(self, timeout_s: float = 120.0) -> LocalPredictor:
        from services.local.stack import CLI, free_port, start_process

        self.workdir.mkdir(parents=True, exist_ok=True)
        self.ports = {"admin": free_port(), "grpc": free_port(), "http": free_port()}
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSADAPT_")}
        env |= {
            "CROSSADAPT_HOME": str(self.workdir / "home"), "CROSSADAPT_STORE_URL": str(self.pair.store),
            "CROSSADAPT_GRPC_HOST": "127.0.0.1", "CROSSADAPT_GRPC_PORT": str(self.ports["admin"]),
            "CROSSADAPT_METRICS_PORT": "0", "CROSSADAPT_LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1",
            "CROSSADAPT_PREDICTOR_MODEL_NAME": MODEL_NAME,
            "CROSSADAPT_PREDICTOR_TEACHER": self.pair.teacher, "CROSSADAPT_PREDICTOR_STUDENT": self.pair.student,
            "CROSSADAPT_PREDICTOR_STUDENT_WEIGHT": "0", "CROSSADAPT_PREDICTOR_SALT": self.salt,
            "CROSSADAPT_PREDICTOR_COHORT_KEY": self.cohort_key, "CROSSADAPT_PREDICTOR_SHADOW_SHARE": "1.0",
            "CROSSADAPT_PREDICTOR_HTTP_PORT": str(self.ports["http"]),
            "CROSSADAPT_PREDICTOR_INFERENCE_GRPC_PORT": str(self.ports["grpc"]),
            "CROSSADAPT_PREDICTOR_BOOTSTRAP_REPLICATES": str(self.bootstrap_replicates),
            # The replay reads figures through GetArmMetrics; the exposure log is not needed.
            "CROSSADAPT_PREDICTOR_FLUSH_INTERVAL_S": "3600", "CROSSADAPT_PREDICTOR_METRICS_REFRESH_S": "3600",
            # The replay runs in compressed time (a whole step in well under a second of wall time): shadow
            # rows are scored at once rather than coalesced for up to 0.5 s, or the gates would see no pairs.
            "CROSSADAPT_PREDICTOR_SHADOW_MAX_DELAY_S": "0",
        }
        self.process = start_process(CLI + ["serve", "predictor"], self.log, env=env)
        try:
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        from services.predictor.bench import _wait_ready as wait_until_ready  # KServe's /v2/health/ready

        wait_until_ready(self.ports["http"], self.process, self.log, timeout_s)

    def stop(self) -> None:
        from services.local.stack import stop_process

        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def __enter__(self) -> LocalPredictor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
