"""`crossadapt switch --services local|ADDRESS`: the switch's stages through the services' gRPC APIs.

The same stages as the in-process switch (`crossadapt.transfer.switch.run_switch`), but every stage is
an operation on a service, and only refs cross the wire:

    begin_switch (data, teacher, splits: core, in this process)
    upload: teacher → checkpoint store (model, sharded tables, vocabulary); train/online → dataset store
    ┌ projector.StartProjection(teacher → width d_S)  ┐
    ├ sampler.StartSampling(train, teacher)           ├ run concurrently: none needs another's output
    └ drift-detector.ComputeDrift(train windows)      ┘
    offline-distiller.StartDistillation(projected student, teacher, sample)           → student v1
                      (adaptive_kd: config.adaptive to both distillers, the train split as validation rows)
    online-codistiller.StartCoDistillation(student v1, teacher, online stream, replay) → student vN
                      (online.drift.rolling and online.collaborative go to the co-distiller, which
                      re-estimates Δ_shift from the stream / lets the teacher learn from the student)
                      (online.grow_vocabulary: a teacher of an older vocabulary version goes up with the
                      training rows as that version, the stream as the dataset's; both models grow to it)
    finish_switch (score on test, baselines, report) with every operation's id and seconds

`local` starts the stack itself (embedded broker and store under OUT/platform); an ADDRESS is a host
whose services listen on their default ports, or `name=host:port,…` per service. With an address
the client uploads into the store named by the CROSSADAPT_* settings, which must be the services' store.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc

from crossadapt.data.growth import ids_for_sizes
from crossadapt.transfer.experiments.methods import MethodOutcome, prior_shift, window_batches
from crossadapt.transfer.experiments.results import DriftSummary, OperationTiming, SwitchResults
from crossadapt.transfer.network_reuse import NetworkReuse
from crossadapt.transfer.switch import SwitchRun, begin_switch, finish_switch
from crossadapt.transfer.switch_config import SwitchConfig
from services.common import model_io
from services.common.operation_api import TERMINAL_WIRE_STATES
from services.common.proto import common_pb2, operations_pb2, operations_pb2_grpc
from services.common.registry import get_spec
from services.common.settings import PlatformSettings
from services.common.storage import CheckpointStore, open_object_store
from services.common.storage.datasets import DatasetStore

Log = Callable[[str], None]
BACKEND_SERVICES = ("projector", "sampler", "drift-detector", "offline-distiller", "online-codistiller")
STREAM_PARTITIONS = 10  # the online split as a stream of time partitions
# A stack the switch started stops while the student is scored; its grace is ample for an idle worker's
# warm shutdown (~3 s on two cores) on a busy machine, so the pool exits by itself, not by SIGKILL.
LOCAL_STACK_GRACE_S = 15.0
T = TypeVar("T")


class PlatformSwitchError(RuntimeError):
    """A stage's operation failed or was cancelled; the message names the service, operation and reason."""


def unsupported_options(config: SwitchConfig) -> list[str]:
    """Config options the platform path cannot honour (refused before anything runs)."""
    problems = [f"ablation.{name}=false" for name, on in config.ablation.model_dump().items() if not on]
    if config.device != "cpu":
        problems.append(f"device={config.device!r} (the services choose their own devices)")
    return problems


def service_addresses(services: str) -> dict[str, str]:
    """`host` (default ports) or `name=host:port,…` → {service: address}."""
    if "=" not in services:
        return {name: f"{services}:{get_spec(name).default_port}" for name in BACKEND_SERVICES}
    addresses = {}
    for item in services.split(","):
        name, _, address = item.partition("=")
        if name.strip() not in BACKEND_SERVICES or not address:
            raise ValueError(f"--services: {item!r} is not NAME=HOST:PORT with NAME one of {BACKEND_SERVICES}")
        addresses[name.strip()] = address.strip()
    missing = sorted(set(BACKEND_SERVICES) - set(addresses))
    if missing:
        raise ValueError(f"--services names no address for {missing}")
    return addresses


@dataclass
class PlatformClient:
    """Channels to the services, and the stores the client uploads into."""

    addresses: dict[str, str]
    settings: PlatformSettings
    channels: dict[str, grpc.Channel] = field(default_factory=dict)
    timings: list[OperationTiming] = field(default_factory=list)
    on_close: Callable[[], None] | None = None

    def channel(self, service: str) -> grpc.Channel:
        if service not in self.channels:
            self.channels[service] = grpc.insecure_channel(self.addresses[service])
        return self.channels[service]

    def stub(self, service: str) -> Any:
        return get_spec(service).stub_class()(self.channel(service))

    def close(self) -> None:
        """Close the channels; a stack started for this client begins stopping (`on_close`)."""
        for channel in self.channels.values():
            channel.close()
        self.channels.clear()
        if self.on_close is not None:
            self.on_close()

    def run(self, service: str, start: Callable[[Any], Any], timeout_s: float = 3600.0) -> common_pb2.Operation:
        """Start an operation with `start(stub)`, follow it to the end; raise unless it SUCCEEDED."""
        began = time.perf_counter()
        operation = start(self.stub(service)).operation
        watcher = operations_pb2_grpc.OperationsServiceStub(self.channel(service))
        final = operation
        while final.state not in TERMINAL_WIRE_STATES:
            try:
                for reply in watcher.WatchOperation(operations_pb2.WatchOperationRequest(operation_id=operation.id),
                                                    timeout=timeout_s):
                    final = reply.operation
            except grpc.RpcError as exc:  # a server restart ends the stream: watch again
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
                time.sleep(0.5)
        seconds = time.perf_counter() - began
        state = common_pb2.OperationState.Name(final.state).removeprefix("OPERATION_STATE_")
        self.timings.append(OperationTiming(service=service, kind=final.kind, operation_id=final.id,
                                            seconds=round(seconds, 3), state=state, result=_result_label(final)))
        if final.state != common_pb2.OPERATION_STATE_SUCCEEDED:
            raise PlatformSwitchError(f"{service} operation {final.id} ({final.kind}) ended {state}: "
                                      f"{final.error.code_name} {final.error.field}: {final.error.message}")
        return final


def _result_label(operation: common_pb2.Operation) -> str:
    if operation.HasField("checkpoint"):
        return f"{operation.checkpoint.name}/{operation.checkpoint.version}"
    if operation.HasField("dataset"):
        return operation.dataset.name
    return ""


@contextmanager
def connect(services: str, out_dir: Path, log: Log, meanwhile: Callable[[], T]) -> Iterator[tuple[PlatformClient, T]]:
    """A client of a running platform (`ADDRESS`), or of one this call starts and stops (`local`), and
    what `meanwhile()` returned: with `local` it runs while the servers and workers start (their imports
    of torch and the data work overlap instead of adding up)."""
    if services != "local":
        client = PlatformClient(service_addresses(services), PlatformSettings())
        try:
            yield client, meanwhile()
        finally:
            client.close()
        return
    from services.local.up import start_platform

    log("starting the local platform (embedded broker and store) …")
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="platform-start") as pool:
        starting = pool.submit(start_platform, out_dir / "platform", services=list(BACKEND_SERVICES))
        try:
            result = meanwhile()
        except BaseException:
            with suppress(BaseException):
                starting.result().stop()
            raise
        platform = starting.result()
    client = PlatformClient({name: platform.address(name) for name in BACKEND_SERVICES}, platform.settings(),
                            on_close=platform.begin_stop)
    try:
        yield client, result
    finally:
        client.close()
        platform.stop(grace_s=LOCAL_STACK_GRACE_S)


# ---- the stages -------------------------------------------------------------------------------------
def teacher_vocabulary(run: SwitchRun) -> tuple[str, Any, int | None]:
    """(hash, vocabulary, version) of the teacher's tables: the dataset's, or with online.grow_vocabulary
    an older version of it (begin_switch accepts an older teacher only then)."""
    from crossadapt.data.growth import version_for_sizes

    dataset = run.dataset
    vocabulary = dataset.vocabulary
    if run.teacher.spec == dataset.feature_spec or vocabulary is None:
        return dataset.vocab_hash, vocabulary, vocabulary.version if vocabulary is not None else None
    sizes = {field.name: field.vocab_size for field in run.teacher.spec.categorical}
    older = vocabulary.at_version(version_for_sizes(vocabulary, sizes).version)
    return older.hash, older, older.version


def _ref(name: str, version: str = "") -> common_pb2.CheckpointRef:
    return common_pb2.CheckpointRef(name=name, version=version)


def _model_spec(config: SwitchConfig) -> Any:
    from services.common.proto import offline_distiller_pb2

    model = config.student.model.model_dump(mode="json")
    spec = offline_distiller_pb2.ModelSpec(architecture=model.pop("architecture"),
                                           embedding_dim=model.pop("embedding_dim"),
                                           hidden=model.pop("hidden_units", []))
    spec.options.update(model)
    return spec


def _adaptive_kd(config: SwitchConfig) -> Any:
    """`adaptive_kd` as the distillers' AdaptiveKD message (every field set), or None for the fixed λ."""
    if config.adaptive_kd is None:
        return None
    raw = config.adaptive_kd.model_dump()
    schedules = {stage: common_pb2.AdaptiveSchedule(**raw.pop(stage)) for stage in ("online", "offline")}
    return common_pb2.AdaptiveKD(**raw, **schedules)


def _collaborative(config: SwitchConfig) -> Any:
    """`online.collaborative` as the co-distiller's message (every field set), or None: the paper's teacher."""
    from services.common.proto import online_codistiller_pb2

    if config.online.collaborative is None:
        return None
    return online_codistiller_pb2.CollaborativeCoDistillation(**config.online.collaborative.model_dump())


def _drift_summary(operation: common_pb2.Operation, config: SwitchConfig) -> DriftSummary | None:
    from google.protobuf.json_format import MessageToDict

    reference = MessageToDict(operation.details).get("reference")  # Δ_shift of the training pool (Eq. 13)
    if not reference:
        return None
    drift = config.online.drift
    return DriftSummary(metric=drift.metric, shift=float(reference["shift"]),
                        replay_ratio=float(reference["replay_ratio"]), theta_low=drift.theta_low,
                        theta_high=drift.theta_high,
                        per_feature={entry["name"]: float(entry["mean"])
                                     for entry in reference.get("report", {}).get("per_feature", [])})


def run_stages(client: PlatformClient, run: SwitchRun, prefix: str, log: Log) -> tuple[Any, dict[str, Any]]:
    """Upload, then every stage through the services; returns the final student model and stage facts."""
    from services.common.proto import (
        drift_detector_pb2,
        offline_distiller_pb2,
        online_codistiller_pb2,
        projector_pb2,
        sampler_pb2,
    )

    config, dataset = run.config, run.dataset
    objects = open_object_store(client.settings)
    checkpoints, datasets = CheckpointStore(objects), DatasetStore(objects)
    facts: dict[str, Any] = {}
    began = time.perf_counter()
    # The teacher's tables may be of an older version of the dataset's vocabulary (online.grow_vocabulary):
    # it and the training rows go up as that version (what the offline stages read), the online stream as
    # the dataset's, which the co-distiller grows both models to.
    spec = run.teacher.spec
    vocab_hash, vocabulary, version = teacher_vocabulary(run)
    teacher = model_io.publish_model(checkpoints, f"{prefix}/teacher", run.teacher, feature_spec=spec,
                                     vocab_hash=vocab_hash, vocabulary=vocabulary,
                                     parent=str(run.teacher_path.resolve()), owner=prefix,
                                     extra={"vocab_version": version})
    train_name, online_name = f"{prefix}/train", f"{prefix}/online"
    train = run.splits["train"]  # as the teacher's tables read it (the in-process stages see no newer ids there)
    train = replace(train, categorical=ids_for_sizes(train.categorical, [f.vocab_size for f in spec.categorical]))
    model_io.write_split(datasets, train_name, train, spec, vocab_hash=vocab_hash, vocab_version=version)
    model_io.write_split(datasets, online_name, run.splits["online"], dataset.feature_spec,
                         vocab_hash=dataset.vocab_hash, partitions=STREAM_PARTITIONS,
                         vocab_version=dataset.vocabulary.version if dataset.vocabulary is not None else None,
                         # the values too: the co-distiller's grown checkpoints carry them (predictor, #16)
                         vocabulary=dataset.vocabulary if dataset.vocabulary is not None
                         and dataset.vocabulary.hash == dataset.vocab_hash else None)
    facts["upload_s"] = time.perf_counter() - began
    log(f"uploaded teacher {teacher.ref} and the train/online splits in {facts['upload_s']:.1f} s")

    teacher_ref = _ref(teacher.name, teacher.version)
    s, d, o = config.offline.sampling, config.offline.distillation, config.online
    drift_config = dict(metric=o.drift.metric, windows=o.drift.windows, bins=o.drift.bins, low=o.drift.theta_low,
                        high=o.drift.theta_high, max_replay=o.drift.max_replay)

    def project() -> common_pb2.Operation:
        return client.run("projector", lambda stub: stub.StartProjection(projector_pb2.StartProjectionRequest(
            teacher=teacher_ref, student_name=f"{prefix}/student-projected",
            width=config.student.model.embedding_dim, seed=config.seed, request_id=f"{prefix}/projection")))

    def sample() -> common_pb2.Operation:
        return client.run("sampler", lambda stub: stub.StartSampling(sampler_pb2.StartSamplingRequest(
            dataset=common_pb2.DatasetRef(name=train_name), teacher=teacher_ref,
            config=sampler_pb2.SamplingConfig(ratio=s.ratio, positive_ratio=s.positive_ratio,
                                              temporal_blocks=s.temporal_blocks, seed=config.seed,
                                              target=s.target, unclicked_ratio=s.unclicked_ratio),
            sample_name=f"{prefix}/sample", request_id=f"{prefix}/sampling")))

    def drift() -> common_pb2.Operation:
        return client.run("drift-detector", lambda stub: stub.ComputeDrift(drift_detector_pb2.ComputeDriftRequest(
            reference=common_pb2.DatasetRef(name=train_name), config=drift_detector_pb2.DriftConfig(**drift_config),
            request_id=f"{prefix}/drift")))

    log("projection, sampling and drift run concurrently …")
    with ThreadPoolExecutor(max_workers=3) as pool:
        projected_f, sample_f, drift_f = pool.submit(project), pool.submit(sample), pool.submit(drift)
        projected, sampled, drifted = projected_f.result(), sample_f.result(), drift_f.result()
    facts["drift"] = _drift_summary(drifted, config)

    from crossadapt.training import positive_rate

    task_logit_shift = 0.0
    if s.prior_correction:
        from google.protobuf.json_format import MessageToDict

        report = MessageToDict(sampled.details)
        task_logit_shift = prior_shift(report.get("positive_rate"), positive_rate(run.splits["train"], s.target))
    # The new student starts at the training split's click rate, as the in-process switch's (_fresh_student)
    base_rate = positive_rate(run.splits["train"])
    adaptive = _adaptive_kd(config)
    log("offline distillation …")
    distilled = client.run("offline-distiller", lambda stub: stub.StartDistillation(
        offline_distiller_pb2.StartDistillationRequest(
            student=projected.checkpoint, teacher=teacher_ref, sample=sampled.dataset,
            config=offline_distiller_pb2.DistillationConfig(
                kd_weight=d.kd_weight, temperature=d.temperature, frozen_epochs=d.frozen_epochs,
                joint_epochs=d.joint_epochs, batch_size=config.optim.batch_size, dense_lr=config.optim.dense_lr,
                embedding_lr=config.optim.embedding_lr, seed=config.seed, task_logit_shift=task_logit_shift,
                kd_gate=d.kd_gate, target=s.target, base_rate=base_rate, adaptive=adaptive,
                reuse_teacher_network=config.offline.reuse_teacher_network),
            student_name=f"{prefix}/student", student_model=_model_spec(config), request_id=f"{prefix}/distillation",
            # adaptive λ compares student and teacher on the most recent training rows, as in process
            validation=common_pb2.DatasetRef(name=train_name) if adaptive is not None else None)))
    log("online co-distillation …")
    codistilled = client.run("online-codistiller", lambda stub: stub.StartCoDistillation(
        online_codistiller_pb2.StartCoDistillationRequest(
            student=distilled.checkpoint, teacher=teacher_ref, stream=common_pb2.DatasetRef(name=online_name),
            replay=common_pb2.DatasetRef(name=train_name),
            config=online_codistiller_pb2.CoDistillationConfig(
                teacher_update_interval=o.teacher_update_interval, batch_size=config.optim.batch_size,
                kd_weight=d.kd_weight, temperature=d.temperature, dense_lr=config.optim.dense_lr,
                embedding_lr=config.optim.embedding_lr, teacher_dense_lr=o.teacher_lr,
                teacher_embedding_lr=o.teacher_embedding_lr_for(config.optim.embedding_lr), seed=config.seed,
                window_batches=window_batches(run.ctx), grow_vocabulary=o.grow_vocabulary,
                projection_seed=config.seed, target=s.target, kd_gate=d.kd_gate, adaptive=adaptive,
                collaborative=_collaborative(config),
                # rolling: the co-distiller re-estimates Δ_shift from the stream, with the bins fitted on
                # the replay pool (the training split), as the in-process switch does
                drift=online_codistiller_pb2.CoDistillationDriftSettings(
                    **drift_config, rolling=o.drift.rolling, window_rows=o.drift.window_rows)),
            student_name=f"{prefix}/student", teacher_name=f"{prefix}/teacher-co", request_id=f"{prefix}/codistill")))
    if config.offline.reuse_teacher_network:  # what the offline distiller took from the teacher, as in process
        offline = checkpoints.resolve(distilled.checkpoint.name, distilled.checkpoint.version).manifest.extra
        taken = offline.get("initial_tables", {}).get("teacher_network", [])
        facts["network_reuse"] = NetworkReuse.of(taken).model_dump()
    student, published = model_io.load_model(checkpoints, codistilled.checkpoint.name, codistilled.checkpoint.version)
    facts["student_ref"] = published.ref
    extra = published.manifest.extra  # the co-distiller's account of the stream, as the in-process details
    facts["online"] = {"online_rows": extra.get("rows"), "replay_rows": extra.get("replay_rows"),
                       "teacher_updates": extra.get("teacher_updates"), "rolling_drift": extra.get("rolling_drift"),
                       "collaboration_share": extra.get("collaboration_share")}
    facts["teacher_ref"] = teacher.ref
    return student, facts


def run_switch_through_services(config: SwitchConfig, out_dir: Path, *, services: str,
                                log: Log = lambda _: None) -> SwitchResults:
    """The switch with every stage an operation on the platform's services (see the module docstring)."""
    problems = unsupported_options(config)
    if problems:
        raise ValueError(f"the platform path cannot run this config: {'; '.join(problems)}")
    if services != "local":
        service_addresses(services)  # refuse a malformed address before the data work starts
    prefix = f"switch/{uuid.uuid4().hex[:10]}"
    with connect(services, Path(out_dir), log, lambda: begin_switch(config, out_dir, log=log)) as (client, run):
        started = time.perf_counter()
        student, facts = run_stages(client, run, prefix, log)
        train_seconds = time.perf_counter() - started - facts["upload_s"]
        # The services are done: a stack started here shuts down while the student is scored and reported.
        client.close()
        stage_seconds: dict[str, float] = {"upload": round(facts["upload_s"], 3)}
        for timing in client.timings:
            stage_seconds[timing.kind] = stage_seconds.get(timing.kind, 0.0) + timing.seconds
        outcome = MethodOutcome(name=f"CrossAdapt ({run.student_label})", model=student,
                                train_seconds=train_seconds, drift=facts["drift"], stage_seconds=stage_seconds,
                                details={"platform": services, "student_ref": facts["student_ref"],
                                         "teacher_ref": facts["teacher_ref"], **facts["online"],
                                         **({"network_reuse": facts["network_reuse"]} if "network_reuse" in facts
                                            else {})})
        return finish_switch(run, outcome, log=log, operations=client.timings, platform=services,
                             extra={"platform": services, "store_ref": facts["student_ref"]})
