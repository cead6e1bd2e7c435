"""`crossadapt bench predictor --json PATH`: our predictor against a bare KServe model, same MLP-8, same machine.

* bare: a KServe 0.21 model that only runs the torch module on already-encoded inputs
  (`categorical` INT64 [B, 26] ids, `numerical` FP32 [B, 13]), behind KServe's own REST and gRPC servers;
* ours: `crossadapt serve predictor` with the same checkpoint in both arms, split 50/50, 100% shadow
  scoring, raw Criteo-shaped values (26 text fields, 13 numbers, a user id) looked up in the vocabulary.

Both servers are pinned to one core (the first) when the machine has two or more; the client runs
on the others. Both run for the whole bench and are measured in alternating rounds (bare, ours,
ours, bare, ...), so a change in the machine's load weighs on both alike; the JSON records the load
average before and after. Batch 1: sequential requests, p50 / p99 latency over all rounds. Batch
256: `in_flight` concurrent gRPC requests, rows per second. Writes one JSON object with, among others, `grpc_b1_p99_ratio`,
`rest_b1_p99_ratio` (ours ÷ bare) and `grpc_b256_rows_per_s` (ours).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

CATEGORICAL_FIELDS = 26
NUMERICAL_FIELDS = 13
MODEL = "ctr"


# ---- the world: a Criteo-shaped vocabulary and an MLP-8 teacher ---------------------------------
def build_world(folder: Path, max_cardinality: int = 200_000, seed: int = 0) -> dict[str, Any]:
    """Publish the MLP-8 teacher with its vocabulary into a local store under `folder`."""
    import pyarrow as pa
    import torch

    from crossadapt.data.vocabulary import Vocabulary
    from crossadapt.models import CategoricalField, FeatureSpec, build_model, paper_teacher_config
    from services.common.model_io import publish_model
    from services.common.storage import CheckpointStore, LocalObjectStore

    cardinalities = np.geomspace(10, max_cardinality, CATEGORICAL_FIELDS).astype(int)
    vocabulary = Vocabulary({f"C{i + 1}": pa.array(np.char.add(f"c{i + 1}-", np.arange(c).astype(str)))
                             for i, c in enumerate(cardinalities)})
    spec = FeatureSpec(categorical=tuple(CategoricalField(name=f, vocab_size=vocabulary.size(f))
                                         for f in vocabulary.fields),
                       numerical=tuple(f"I{i + 1}" for i in range(NUMERICAL_FIELDS)))
    torch.manual_seed(seed)
    model = build_model(paper_teacher_config(), spec)
    store = folder / "store"
    published = publish_model(CheckpointStore(LocalObjectStore(store)), "bench/mlp8", model, feature_spec=spec,
                              vocab_hash=vocabulary.hash, vocabulary=vocabulary, owner="bench")
    return {"store": str(store), "checkpoint": published.ref, "cardinalities": cardinalities.tolist()}


def raw_rows(cardinalities: list[int], rows: int, rng: np.random.Generator) -> dict[str, Any]:
    """Raw values (what our predictor takes) and their encoded form (what the bare model takes)."""
    ids = np.stack([rng.integers(0, c, rows) for c in cardinalities], axis=1)
    text = {f"C{i + 1}": [f"c{i + 1}-{v}" for v in ids[:, i]] for i in range(len(cardinalities))}
    numbers = rng.exponential(5.0, (rows, NUMERICAL_FIELDS)).round(2)
    raw = {**text, **{f"I{i + 1}": numbers[:, i].tolist() for i in range(NUMERICAL_FIELDS)},
           "user_id": [f"user-{u}" for u in rng.integers(0, 1_000_000, rows)]}
    transformed = numbers.astype(np.float32)
    transformed[transformed > 2] = np.log2(transformed[transformed > 2])
    return {"raw": raw, "categorical": ids + 1, "numerical": transformed}  # the vocabulary's id k+1 is value k


# ---- the bare KServe model (run in its own process: `python -m services.predictor.bench bare ...`) ----
def serve_bare(store: str, checkpoint: str, http_port: int, grpc_port: int) -> None:
    """KServe's stock servers and data plane with a model that only runs the torch module."""
    import torch
    from kserve import Model, ModelServer
    from kserve.model_server import args as kserve_args
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
    from kserve.protocol.grpc.server import GRPCServer
    from kserve.protocol.grpc.servicer import InferenceServicer
    from kserve.protocol.infer_type import InferOutput, InferResponse

    from services.common.model_io import load_model
    from services.common.storage import CheckpointStore, LocalObjectStore
    from services.predictor.kserve_server import HostRESTServer

    torch.set_num_threads(1)
    name, _, version = checkpoint.rpartition("/")
    module, _ = load_model(CheckpointStore(LocalObjectStore(Path(store))), name, version)

    class BareModel(Model):
        def __init__(self) -> None:
            super().__init__(MODEL)
            self.ready = True

        async def predict(self, payload, headers=None):  # noqa: ANN001, ANN201 - KServe's signature
            inputs = {i.name: i.as_numpy() for i in payload.inputs}
            with torch.inference_mode():
                logits = module(torch.from_numpy(inputs["categorical"].astype(np.int64)),
                                torch.from_numpy(inputs["numerical"].astype(np.float32)))
            output = InferOutput(name="probability", shape=[len(logits)], datatype="FP32")
            output.set_data_from_numpy(torch.sigmoid(logits).numpy(), binary_data=payload.use_binary_outputs)
            return InferResponse(response_id=payload.id or "", model_name=MODEL, infer_outputs=[output],
                                 use_binary_outputs=payload.use_binary_outputs)

    class LoopbackGRPCServer(GRPCServer):  # KServe's start(), bound to 127.0.0.1 instead of [::]
        async def start(self, max_workers: int) -> None:
            import grpc

            self._server = grpc.aio.server(interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()))
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                InferenceServicer(self._data_plane, self._model_repository_extension), self._server)
            self._server.add_insecure_port(f"127.0.0.1:{self._port}")
            await self._server.start()
            await self._server.wait_for_termination()

    server = ModelServer(http_port=http_port, grpc_port=grpc_port, enable_latency_logging=False)
    server._register_and_check_atleast_one_model_is_ready([BareModel()])
    rest = HostRESTServer("127.0.0.1", lambda app, server: None, "kserve.model_server:app", server.dataplane,
                          server.model_repository_extension, http_port)
    grpc_server = LoopbackGRPCServer(grpc_port, server.dataplane, server.model_repository_extension,
                                     kwargs=vars(kserve_args))

    async def run() -> None:
        await asyncio.gather(rest.start(), grpc_server.start(1))

    asyncio.run(run())


# ---- clients ------------------------------------------------------------------------------------
def _grpc_request(payload: dict[str, Any], bare: bool) -> Any:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name=MODEL)
    if bare:
        categorical, numerical = payload["categorical"], payload["numerical"]
        tensor = request.inputs.add(name="categorical", datatype="INT64", shape=list(categorical.shape))
        tensor.contents.int64_contents.extend(categorical.ravel().tolist())
        tensor = request.inputs.add(name="numerical", datatype="FP32", shape=list(numerical.shape))
        tensor.contents.fp32_contents.extend(numerical.ravel().tolist())
        return request
    for name, values in payload["raw"].items():
        if isinstance(values[0], str):
            tensor = request.inputs.add(name=name, datatype="BYTES", shape=[len(values)])
            tensor.contents.bytes_contents.extend(v.encode() for v in values)
        else:
            tensor = request.inputs.add(name=name, datatype="FP64", shape=[len(values)])
            tensor.contents.fp64_contents.extend(values)
    return request


def _rest_body(payload: dict[str, Any], bare: bool) -> dict[str, Any]:
    if bare:
        return {"inputs": [
            {"name": "categorical", "datatype": "INT64", "shape": list(payload["categorical"].shape),
             "data": payload["categorical"].ravel().tolist()},
            {"name": "numerical", "datatype": "FP32", "shape": list(payload["numerical"].shape),
             "data": payload["numerical"].ravel().tolist()}]}
    return {"inputs": [{"name": k, "shape": [len(v)], "datatype": "BYTES" if isinstance(v[0], str) else "FP64",
                        "data": v} for k, v in payload["raw"].items()]}


def _percentiles(seconds: list[float]) -> tuple[float, float]:
    p50, p99 = np.percentile(np.asarray(seconds) * 1000.0, [50, 99])
    return float(p50), float(p99)


def measure(ports: dict[str, int], payloads: list[dict[str, Any]], big: list[dict[str, Any]], bare: bool,
            requests: int, in_flight: int, offset: int = 0) -> dict[str, Any]:
    """One round against one server: batch-1 latencies (seconds) over gRPC and REST, and the rows and
    seconds of the batch-256 gRPC requests (`in_flight` at a time)."""
    import grpc
    import httpx
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}")
    stub = grpc_predict_v2_pb2_grpc.GRPCInferenceServiceStub(channel)
    _check_answer(stub, _grpc_request(big[0], bare), len(big[0]["categorical"]))
    # Requests go out pre-serialized and answers come back as bytes, so the client's own protobuf work
    # (it shares the machine) does not limit what is measured: the server.
    infer = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", request_serializer=None,
                                response_deserializer=None)
    stub = _RawStub(infer)
    grpc_requests = [_grpc_request(p, bare).SerializeToString() for p in payloads]
    rest_bodies = [json.dumps(_rest_body(p, bare)).encode() for p in payloads]
    url = f"http://127.0.0.1:{ports['http']}/v2/models/{MODEL}/infer"
    result: dict[str, Any] = {}
    with httpx.Client(timeout=30, headers={"content-type": "application/json"}) as http:
        for warm in range(20):
            stub.ModelInfer(grpc_requests[warm % len(grpc_requests)], timeout=30)
            http.post(url, content=rest_bodies[warm % len(rest_bodies)]).raise_for_status()
        for protocol in ("grpc", "rest"):
            latencies = []
            for index in range(offset, offset + requests):
                started = time.perf_counter()
                if protocol == "grpc":
                    stub.ModelInfer(grpc_requests[index % len(grpc_requests)], timeout=30)
                else:
                    http.post(url, content=rest_bodies[index % len(rest_bodies)]).raise_for_status()
                latencies.append(time.perf_counter() - started)
            result[f"{protocol}_b1"] = latencies
    batches = [_grpc_request(p, bare).SerializeToString() for p in big]
    with ThreadPoolExecutor(in_flight) as pool:
        list(pool.map(lambda r: stub.ModelInfer(r, timeout=60), batches[:in_flight]))  # warm-up
        started = time.perf_counter()
        list(pool.map(lambda r: stub.ModelInfer(r, timeout=60), batches))
        result["grpc_b256"] = (sum(len(p["categorical"]) for p in big), time.perf_counter() - started)
    channel.close()
    return result


class _RawStub:
    """`ModelInfer` with serialized requests and answers."""

    def __init__(self, infer: Any) -> None:
        self.ModelInfer = infer  # noqa: N815 - the stub's method name


def _check_answer(stub: Any, request: Any, rows: int) -> None:
    """One request through the ordinary stub: the server answers a probability per row."""
    reply = stub.ModelInfer(request, timeout=60)
    probability = next(i for i, o in enumerate(reply.outputs) if o.name == "probability")
    values = (np.frombuffer(reply.raw_output_contents[probability], np.float32) if reply.raw_output_contents
              else np.asarray(reply.outputs[probability].contents.fp32_contents))
    if len(values) != rows or not np.isfinite(values).all():
        raise RuntimeError(f"the server answered {len(values)} probabilities for {rows} rows")


def summarise(rounds: list[dict[str, Any]]) -> dict[str, float]:
    """p50/p99 over all rounds' latencies, rows/s over all rounds' batch-256 time."""
    figures: dict[str, float] = {}
    for protocol in ("grpc", "rest"):
        latencies = [x for r in rounds for x in r[f"{protocol}_b1"]]
        figures[f"{protocol}_b1_p50_ms"], figures[f"{protocol}_b1_p99_ms"] = _percentiles(latencies)
    figures["grpc_b256_rows_per_s"] = (sum(r["grpc_b256"][0] for r in rounds)
                                       / sum(r["grpc_b256"][1] for r in rounds))
    return figures


def torch_latency(world: dict[str, Any], payloads: list[dict[str, Any]]) -> float:
    import torch

    from services.common.model_io import load_model
    from services.common.storage import CheckpointStore, LocalObjectStore

    torch.set_num_threads(1)
    name, _, version = world["checkpoint"].rpartition("/")
    module, _ = load_model(CheckpointStore(LocalObjectStore(Path(world["store"]))), name, version)
    timings = []
    with torch.inference_mode():
        for payload in payloads * 3:
            categorical = torch.from_numpy(payload["categorical"].astype(np.int64))
            numerical = torch.from_numpy(payload["numerical"])
            started = time.perf_counter()
            torch.sigmoid(module(categorical, numerical))
            timings.append(time.perf_counter() - started)
    return _percentiles(timings)[0]


# ---- processes ----------------------------------------------------------------------------------
def _pin(pid: int, cores: set[int]) -> None:
    if hasattr(os, "sched_setaffinity") and cores:
        try:
            os.sched_setaffinity(pid, cores)
        except OSError:
            pass


def _start(args: list[str], env: dict[str, str], log: Path, server_cores: set[int]) -> subprocess.Popen:
    handle = open(log, "ab")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(args, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    _pin(proc.pid, server_cores)
    return proc


def _wait_ready(http_port: int, proc: subprocess.Popen, log: Path, timeout: float = 180.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"server on {http_port} not ready:\n{log.read_text()[-3000:]}")


def run_predictor_bench(*, requests: int = 1000, big_batches: int = 200, in_flight: int = 4,
                        max_cardinality: int = 200_000, workdir: Path | None = None,
                        rounds: int = 4, settings: dict[str, str] | None = None) -> dict[str, Any]:
    """Measure both servers in alternating rounds (same core); returns the figures and ratios.

    `settings`: predictor settings for our server (``{"shadow_chunk_jobs": "1024"}``), over the bench's own."""
    from services.local.stack import free_port, stop_process

    workdir = Path(workdir or tempfile.mkdtemp(prefix="crossadapt-bench-predictor-"))
    workdir.mkdir(parents=True, exist_ok=True)
    world = build_world(workdir, max_cardinality)
    rng = np.random.default_rng(1)
    payloads = [raw_rows(world["cardinalities"], 1, rng) for _ in range(200)]
    big = [raw_rows(world["cardinalities"], 256, rng) for _ in range(big_batches)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cores = {cores[0]} if len(cores) >= 2 else set()
    _pin(0, set(cores[1:]) if len(cores) >= 2 else set())
    base_env = {k: v for k, v in os.environ.items() if not k.startswith("CROSSADAPT_")}
    base_env |= {"CROSSADAPT_HOME": str(workdir / "home"), "CROSSADAPT_STORE_URL": world["store"],
                 "OMP_NUM_THREADS": "1", "CROSSADAPT_LOG_LEVEL": "WARNING"}
    results: dict[str, Any] = {"server_cores": len(server_cores) or "shared", "requests": requests,
                               "b256_requests": big_batches, "in_flight": in_flight, "rounds": rounds,
                               "predictor_settings": dict(settings or {}),
                               "load_average_1m_before": round(os.getloadavg()[0], 2)}
    servers: dict[str, tuple[subprocess.Popen, dict[str, int]]] = {}
    try:
        for kind in ("bare", "ours"):
            ports = {"http": free_port(), "grpc": free_port()}
            log = workdir / f"{kind}.log"
            if kind == "bare":
                args = [sys.executable, "-m", "services.predictor.bench", "bare", "--store", world["store"],
                        "--checkpoint", world["checkpoint"], "--http-port", str(ports["http"]),
                        "--grpc-port", str(ports["grpc"])]
                env = base_env
            else:
                args = [sys.executable, "-c", "from crossadapt.cli import main; main()", "serve", "predictor"]
                env = base_env | {
                    "CROSSADAPT_GRPC_PORT": str(free_port()), "CROSSADAPT_METRICS_PORT": "0",
                    "CROSSADAPT_PREDICTOR_TEACHER": world["checkpoint"],
                    "CROSSADAPT_PREDICTOR_STUDENT": world["checkpoint"],
                    "CROSSADAPT_PREDICTOR_STUDENT_WEIGHT": "0.5", "CROSSADAPT_PREDICTOR_SHADOW_SHARE": "1.0",
                    "CROSSADAPT_PREDICTOR_HTTP_PORT": str(ports["http"]),
                    "CROSSADAPT_PREDICTOR_INFERENCE_GRPC_PORT": str(ports["grpc"]),
                    "CROSSADAPT_PREDICTOR_FLUSH_INTERVAL_S": "3600", "CROSSADAPT_PREDICTOR_METRICS_REFRESH_S": "3600",
                    **{f"CROSSADAPT_PREDICTOR_{name.upper()}": value for name, value in (settings or {}).items()}}
            proc = _start(args, env, log, server_cores)
            servers[kind] = (proc, ports)
            _wait_ready(ports["http"], proc, log)
        # Both servers stay up (each idle while the other is measured) and the rounds alternate, so a
        # change in the machine's load (other processes) weighs on both alike.
        measured: dict[str, list[dict[str, Any]]] = {"bare": [], "ours": []}
        per_round, big_per_round = max(requests // rounds, 1), max(len(big) // rounds, 1)
        for index in range(rounds):
            chunk = big[index * big_per_round:(index + 1) * big_per_round] or big[:big_per_round]
            for kind in (("bare", "ours") if index % 2 == 0 else ("ours", "bare")):
                measured[kind].append(measure(servers[kind][1], payloads, chunk, bare=kind == "bare",
                                              requests=per_round, in_flight=in_flight, offset=index * per_round))
    finally:
        for proc, _ in servers.values():
            stop_process(proc)
    for kind, kind_rounds in measured.items():
        results.update({f"{kind}_{k}": round(v, 3) for k, v in summarise(kind_rounds).items()})
    results["torch_b1_p50_ms"] = round(torch_latency(world, payloads), 4)
    for protocol in ("grpc", "rest"):
        results[f"{protocol}_b1_p99_ratio"] = round(results[f"ours_{protocol}_b1_p99_ms"]
                                                    / results[f"bare_{protocol}_b1_p99_ms"], 3)
        results[f"{protocol}_b1_p50_ratio"] = round(results[f"ours_{protocol}_b1_p50_ms"]
                                                    / results[f"bare_{protocol}_b1_p50_ms"], 3)
    results["grpc_b256_rows_per_s"] = results["ours_grpc_b256_rows_per_s"]
    results["grpc_b256_rows_ratio"] = round(results["ours_grpc_b256_rows_per_s"]
                                            / results["bare_grpc_b256_rows_per_s"], 3)
    results["load_average_1m_after"] = round(os.getloadavg()[0], 2)
    return results


def bench_predictor(json_path: Path | None = None, requests: int = 1000, big_batches: int = 200,
                    in_flight: int = 4, rounds: int = 4, settings: list[str] | None = None) -> dict[str, Any]:
    """Run, print, and optionally write the JSON."""
    results = run_predictor_bench(requests=requests, big_batches=big_batches, in_flight=in_flight, rounds=rounds,
                                  settings=parse_settings(settings or []))
    text = json.dumps(results, indent=2)
    if json_path is not None:
        Path(json_path).write_text(text + "\n")
    print(text)
    return results


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """``NAME=VALUE`` pairs of predictor settings (PredictorSettings field names); an unknown name is an error."""
    from services.predictor.settings import PredictorSettings

    parsed = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or name not in PredictorSettings.model_fields:
            raise typer.BadParameter(f"{pair!r}: expected NAME=VALUE with NAME a predictor setting "
                                     f"({', '.join(sorted(PredictorSettings.model_fields))})")
        parsed[name] = value
    return parsed


# The platform CLI mounts this as `crossadapt bench predictor`: bench.command("predictor")(bench_command).
def bench_command(
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the figures as JSON here.")] = None,
    requests: Annotated[int, typer.Option(min=10, help="Batch-1 requests per protocol and server.")] = 1000,
    big_batches: Annotated[int, typer.Option(min=1, help="Batch-256 requests per server.")] = 200,
    in_flight: Annotated[int, typer.Option(min=1, help="Concurrent batch-256 requests.")] = 4,
    rounds: Annotated[int, typer.Option(min=1, help="Alternating measurement rounds per server.")] = 4,
    setting: Annotated[Optional[list[str]], typer.Option(
        help="A predictor setting for our server, NAME=VALUE (repeatable), e.g. shadow_chunk_jobs=1024.")] = None,
) -> None:
    """Our predictor (routing, vocabulary lookup, 100% shadow) against a bare KServe model, same MLP-8."""
    bench_predictor(json_path, requests, big_batches, in_flight, rounds, setting)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m services.predictor.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="measure both servers")
    run.add_argument("--json", type=Path, default=None)
    run.add_argument("--requests", type=int, default=1000)
    run.add_argument("--big-batches", type=int, default=200)
    run.add_argument("--in-flight", type=int, default=4)
    run.add_argument("--rounds", type=int, default=4)
    run.add_argument("--setting", action="append", default=[], help="a predictor setting, NAME=VALUE")
    bare = commands.add_parser("bare", help="serve the bare KServe model (used by `run`)")
    bare.add_argument("--store", required=True)
    bare.add_argument("--checkpoint", required=True)
    bare.add_argument("--http-port", type=int, required=True)
    bare.add_argument("--grpc-port", type=int, required=True)
    args = parser.parse_args(argv)
    if args.command == "bare":
        serve_bare(args.store, args.checkpoint, args.http_port, args.grpc_port)
    else:
        bench_predictor(args.json, args.requests, args.big_batches, args.in_flight, args.rounds, args.setting)


if __name__ == "__main__":
    main()
