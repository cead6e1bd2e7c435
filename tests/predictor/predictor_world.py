"""Tiny models for the predictor tests, published with their vocabularies, and a predictor process.

Fields: categorical C1 (40 text values), C2 (12 text values), C3 (25 integer values written as
text), numerical I1, I2; cohort key `user_id`. Models: MLPs of width 4 with embeddings drawn wide
(std 0.5), so untrained models still give well-spread scores; each seed is another model.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import httpx
import numpy as np
import pyarrow as pa
import torch

from crossadapt.data.vocabulary import Vocabulary
from crossadapt.models import CategoricalField, FeatureSpec, build_model
from services.common.model_io import publish_model
from services.common.storage import CheckpointStore, PublishedCheckpoint
from services.local.stack import free_port, log_tail, stop_process, wait_for

CLI = [sys.executable, "-c", "from crossadapt.cli import main; main()"]
CATEGORICAL = {"C1": [f"site-{i}" for i in range(40)], "C2": [f"ad-{i}" for i in range(12)],
               "C3": [str(i) for i in range(25)]}
NUMERICAL = ("I1", "I2")
MODEL = "ctr"


def tiny_vocabulary() -> Vocabulary:
    return Vocabulary({name: pa.array(values) for name, values in CATEGORICAL.items()})


def tiny_spec(vocabulary: Vocabulary, numerical: tuple[str, ...] = NUMERICAL) -> FeatureSpec:
    return FeatureSpec(categorical=tuple(CategoricalField(name=f, vocab_size=vocabulary.size(f))
                                         for f in vocabulary.fields), numerical=numerical)


def tiny_model(seed: int, vocabulary: Vocabulary, architecture: str = "mlp",
               numerical: tuple[str, ...] = NUMERICAL) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = {"architecture": architecture, "embedding_dim": 4, "hidden_units": [8], "embedding_init_std": 0.5}
    model = build_model(config, tiny_spec(vocabulary, numerical))
    model.set_base_rate(0.3)
    return model.eval()


def publish_tiny(checkpoints: CheckpointStore, name: str, seed: int, vocabulary: Vocabulary | None = None,
                 architecture: str = "mlp", numerical: tuple[str, ...] = NUMERICAL) -> PublishedCheckpoint:
    vocabulary = vocabulary or tiny_vocabulary()
    model = tiny_model(seed, vocabulary, architecture, numerical)
    return publish_model(checkpoints, name, model, feature_spec=tiny_spec(vocabulary, numerical),
                         vocab_hash=vocabulary.hash, vocabulary=vocabulary, owner="tests")


def random_rows(rng: np.random.Generator, count: int, unknown_share: float = 0.0) -> dict[str, list]:
    """Raw request columns; a share of C1 values is unseen (e.g. 'site-new-7')."""
    rows: dict[str, list] = {}
    for name, values in CATEGORICAL.items():
        picked = [values[i] for i in rng.integers(0, len(values), count)]
        rows[name] = picked
    if unknown_share:
        unseen = rng.random(count) < unknown_share
        rows["C1"] = [f"site-new-{i}" if u else v for i, (u, v) in enumerate(zip(unseen, rows["C1"]))]
    rows["I1"] = rng.uniform(0, 50, count).round(3).tolist()
    rows["I2"] = rng.integers(0, 5, count).astype(float).tolist()
    rows["user_id"] = [f"user-{i}" for i in rng.integers(0, 100_000, count)]
    return rows


def model_probabilities(model: torch.nn.Module, vocabulary: Vocabulary, rows: dict[str, list]) -> np.ndarray:
    """What the in-process model says for raw rows (the reference the server must match)."""
    from crossadapt.data.columns import numerical_values

    spec = model.spec
    categorical = np.stack([vocabulary.encode(f.name, pa.array(rows[f.name])) for f in spec.categorical],
                           axis=1).astype(np.int64)
    numerical = np.stack([numerical_values(pa.array(rows[n], pa.float64()), log_transform=True)
                          for n in spec.numerical], 1)
    with torch.inference_mode():
        return torch.sigmoid(model(torch.from_numpy(categorical), torch.from_numpy(numerical))).numpy()


@dataclass
class PredictorProcess:
    """`crossadapt serve predictor` on free loopback ports."""

    workdir: Path
    store: Path | None  # a local store folder, or None with `store_env` naming an S3 store
    settings: dict[str, str] = field(default_factory=dict)
    store_env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    http_port: int = 0
    grpc_port: int = 0
    admin_port: int = 0
    metrics_port: int = 0

    @property
    def log(self) -> Path:
        return self.workdir / "predictor.log"

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 90.0, wait_path: str = "/v2/health/ready") -> PredictorProcess:
        """Start and wait until `wait_path` answers 200 (/v2/health/live: listening, ready or not)."""
        self.http_port, self.grpc_port, self.admin_port, self.metrics_port = (free_port() for _ in range(4))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSADAPT_")}
        env.update({
            "CROSSADAPT_HOME": str(self.workdir / "home"),
            **({"CROSSADAPT_STORE_URL": str(self.store)} if self.store is not None else self.store_env),
            "CROSSADAPT_GRPC_PORT": str(self.admin_port), "CROSSADAPT_METRICS_PORT": str(self.metrics_port),
            "CROSSADAPT_LOG_FORMAT": "json", "CROSSADAPT_SHUTDOWN_GRACE_S": "5",
            "CROSSADAPT_PREDICTOR_HTTP_PORT": str(self.http_port),
            "CROSSADAPT_PREDICTOR_INFERENCE_GRPC_PORT": str(self.grpc_port),
            **{f"CROSSADAPT_PREDICTOR_{k.upper()}": v for k, v in self.settings.items()},
        })
        handle = open(self.log, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([*CLI, "serve", "predictor"], stdout=handle, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the predictor exited:\n{log_tail(self.log)}")
            try:
                return httpx.get(f"{self.http}{wait_path}", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout, "the predictor's REST server", interval=0.2)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        return stop_process(self.proc, sig, timeout=30) if self.proc is not None else 0

    def admin(self):  # noqa: ANN201 - PredictorAdminServiceStub
        from services.common.proto import predictor_pb2_grpc

        return predictor_pb2_grpc.PredictorAdminServiceStub(grpc.insecure_channel(f"127.0.0.1:{self.admin_port}"))

    def inference(self):  # noqa: ANN201 - KServe's GRPCInferenceServiceStub
        from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

        return grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}"))


# ---- request builders ---------------------------------------------------------------------------
def datatype_of(values: list) -> str:
    return "BYTES" if isinstance(values[0], str) else ("FP64" if isinstance(values[0], float) else "INT64")


def v2_json(rows: dict[str, list], request_id: str | None = None) -> dict:
    body: dict = {"inputs": [{"name": k, "shape": [len(v)], "datatype": datatype_of(v), "data": v}
                             for k, v in rows.items()]}
    if request_id:
        body["id"] = request_id
    return body


def v1_json(rows: dict[str, list]) -> dict:
    return {"instances": [dict(zip(rows, values)) for values in zip(*rows.values())]}


def v2_grpc(rows: dict[str, list], *, raw: bool = False, model: str = MODEL, request_id: str = ""):  # noqa: ANN201
    """A ModelInferRequest with the values in typed contents or (raw=True) in raw_input_contents."""
    import struct

    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=model, id=request_id)
    for name, values in rows.items():
        datatype = datatype_of(values)
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(values)])
        if raw:
            if datatype == "BYTES":
                request.raw_input_contents.append(b"".join(struct.pack("<I", len(v.encode())) + v.encode()
                                                           for v in values))
            else:
                request.raw_input_contents.append(np.asarray(values, np.float64 if datatype == "FP64" else np.int64)
                                                  .tobytes())
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        elif datatype == "FP64":
            tensor.contents.fp64_contents.extend(values)
        else:
            tensor.contents.int64_contents.extend(values)
    return request


def grpc_outputs(response) -> dict[str, np.ndarray]:  # noqa: ANN001 - a ModelInferResponse
    """The response's outputs as arrays (raw or typed contents)."""
    out = {}
    for index, tensor in enumerate(response.outputs):
        dtype = np.float32 if tensor.datatype == "FP32" else np.int32
        if response.raw_output_contents:
            out[tensor.name] = np.frombuffer(response.raw_output_contents[index], dtype=dtype)
        else:
            values = tensor.contents.fp32_contents if tensor.datatype == "FP32" else tensor.contents.int_contents
            out[tensor.name] = np.asarray(values, dtype=dtype)
    return out
