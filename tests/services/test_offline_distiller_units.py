"""The offline-distiller's pieces without the platform: settings, the initial student, exact resume, DDP.

* Settings: the request maps onto the core's sections; unset fields are the core's defaults.
* The initial student's tables ARE the projector's output (the projector's own pipeline on a local store);
  fields the teacher lacks start random, numerical vectors are matched by name.
* A run stopped at any step and resumed from its saved state (through the bytes a checkpoint stores)
  ends bit-for-bit where the uninterrupted run ends.
* Data parallel: 2 processes (torch.distributed, gloo on 127.0.0.1) match 1 process at the same global
  batch within 1e-5 (float summation order is all that differs). With adaptive λ every rank holds rank 0's
  controller (rank 0 measures, all observe its figure), BatchNorm students included.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from distiller_fixtures import (
    TINY_SPEC,
    TINY_VOCABULARY,
    VOCAB_HASH,
    project,
    tiny_clicks,
    tiny_model,
)
from crossadapt.models.spec import CategoricalField, FeatureSpec
from crossadapt.transfer.offline.distillation import OfflineDistillConfig, ProgressiveDistillation, cache_teacher_logits
from crossadapt.transfer.switch_config import DistillationSection, OptimSection
from services.common.checks import check_rows
from services.common.errors import FailedPreconditionError, InvalidArgumentError
from services.common.model_io import publish_model
from services.common.operations import FileOperationStore
from services.common.proto import offline_distiller_pb2
from services.common.storage import CheckpointStore, LocalObjectStore
from services.common.storage.tables import read_table
from services.common.training_state import load_tensor_bytes, tensor_bytes
from services.offline_distiller.config import DistillationSettings
from services.offline_distiller.pipeline import DistillationInputs, initial_student, train
from services.offline_distiller.plan import CheckpointPin, DistillationPlan


def plan_for(model, *, spec: FeatureSpec = TINY_SPEC, projected: CheckpointPin | None = None, **settings):  # noqa: ANN001, ANN003
    return DistillationPlan(
        operation_id="unit", student_name="s", projected=projected or CheckpointPin(name="p", version="v000001"),
        teacher=CheckpointPin(name="t", version="v000001"), sample="sample", model=model.config.model_dump(mode="json"),
        settings=DistillationSettings.model_validate(settings), feature_spec=spec, vocab_hash=VOCAB_HASH,
        sample_has_teacher_logits=True)


def test_settings_default_to_the_cores_and_map_onto_its_configs() -> None:
    settings = DistillationSettings.from_proto(offline_distiller_pb2.DistillationConfig())
    assert settings.distillation == DistillationSection() and settings.optim == OptimSection()
    assert (settings.world_size, settings.checkpoint_every_steps, settings.task_logit_shift) == (1, 0, 0.0)
    chosen = DistillationSettings.from_proto(offline_distiller_pb2.DistillationConfig(
        kd_weight=0.0, frozen_epochs=0, joint_epochs=3, batch_size=64, dense_lr=0.01, seed=9))
    assert chosen.distillation.kd_weight == 0.0 and chosen.distillation.frozen_epochs == 0  # explicit zeros kept
    from services.offline_distiller.pipeline import core_config

    core = core_config(plan_for(tiny_model(), **chosen.model_dump()), "cpu")
    defaults = OfflineDistillConfig()
    assert (core.kd_weight, core.joint_epochs, core.batch_size, core.dense_lr, core.seed) == (0.0, 3, 64, 0.01, 9)
    assert (core.temperature, core.embedding_lr, core.progressive) == (defaults.temperature, defaults.embedding_lr, True)
    assert (core.kd_gate, core.target) == ("teacher_better", "click")  # the switch's default gate
    gated = DistillationSettings.from_proto(offline_distiller_pb2.DistillationConfig(kd_gate="all", target="conversion"))
    core = core_config(plan_for(tiny_model(), **gated.model_dump()), "cpu")
    assert (core.kd_gate, core.target) == ("all", "conversion")
    for bad, field in ((dict(batch_size=0), "config.batch_size"), (dict(world_size=65), "config.world_size"),
                       (dict(kd_weight=float("inf")), "config.kd_weight"), (dict(kd_gate="some"), "config.kd_gate"),
                       (dict(target="purchase"), "config.target")):
        with pytest.raises(InvalidArgumentError) as error:
            DistillationSettings.from_proto(offline_distiller_pb2.DistillationConfig(**bad))
        assert error.value.field == field


def test_an_operation_publishes_its_model_into_its_claimed_version_once(tmp_path) -> None:  # noqa: ANN001
    """model_io.publish_model with a claimed version: the distillers' outputs (training state beside the
    model, tables optional); a retry returns the published version, another operation is refused."""
    from services.common.model_io import load_model

    checkpoints = CheckpointStore(LocalObjectStore(tmp_path / "store"))
    version = checkpoints.claim_version("s", owner="op-1")
    state = {"step": torch.tensor(3)}
    published = publish_model(checkpoints, "s", tiny_model(4), version=version, operation_id="op-1",
                              feature_spec=TINY_SPEC, vocab_hash=VOCAB_HASH, vocabulary=TINY_VOCABULARY,
                              files={"training/run.pt": tensor_bytes(state)}, tables=False, extra={"role": "x"})
    assert (published.version, published.manifest.extra["operation_id"]) == (version, "op-1")
    assert "tables" not in published.manifest.extra and not any(f.startswith("tables/") for f in published.manifest.files)
    assert load_tensor_bytes(checkpoints.read_file(published, "training/run.pt"), "state")["step"] == 3
    again = publish_model(checkpoints, "s", tiny_model(4, seed=5), version=version, operation_id="op-1",
                          feature_spec=TINY_SPEC, vocab_hash=VOCAB_HASH)
    assert again.manifest == published.manifest  # the retry did not overwrite the published version
    with pytest.raises(FailedPreconditionError):
        publish_model(checkpoints, "s", tiny_model(4), version=version, operation_id="op-2", feature_spec=TINY_SPEC,
                      vocab_hash=VOCAB_HASH)
    model, _ = load_model(checkpoints, "s", version)
    assert torch.equal(model.embedding.get_table("user"), tiny_model(4).embedding.get_table("user"))
    with_tables = publish_model(checkpoints, "s", tiny_model(4), feature_spec=TINY_SPEC, vocab_hash=VOCAB_HASH,
                                operation_id="op-3")
    assert with_tables.version > version and set(with_tables.manifest.extra["tables"]) >= {"user", "item"}
    assert checkpoints.claim_owner("s", with_tables.version) == "op-3"


def test_initial_student_tables_are_the_projectors_output(tmp_path) -> None:  # noqa: ANN001
    checkpoints = CheckpointStore(LocalObjectStore(tmp_path / "store"))
    teacher = publish_model(checkpoints, "t", tiny_model(4, seed=1), feature_spec=TINY_SPEC, vocab_hash=VOCAB_HASH,
                            vocabulary=TINY_VOCABULARY)
    projected = project(checkpoints, FileOperationStore(tmp_path / "ops"), teacher, "p", width=6)
    # The data has a field the teacher lacks (`site`) and a numerical field it lacks (`discount`).
    spec = FeatureSpec(categorical=(*TINY_SPEC.categorical, CategoricalField(name="site", vocab_size=5)),
                       numerical=("discount", "price"))
    student_model = tiny_model(6, spec=spec)
    plan = plan_for(student_model, spec=spec, projected=CheckpointPin(name=projected.name, version=projected.version),
                    seed=4)
    rows = tiny_clicks(200)
    rows = type(rows)(categorical=np.concatenate([rows.categorical, rows.categorical[:, :1] % 5], axis=1),
                      numerical=np.concatenate([rows.numerical, rows.numerical], axis=1), label=rows.label)
    student, report = initial_student(checkpoints, plan, rows)
    # the teacher reads other fields than the student, so none of its network is taken, whatever its shape
    assert report == {"projected": ["user", "item", "__numerical__"], "random": ["site"], "ignored": [],
                      "teacher_network": []}
    for table in ("user", "item"):
        np.testing.assert_array_equal(student.embedding.get_table(table).numpy(), read_table(checkpoints, projected, table))
    numerical = student.embedding.get_table("__numerical__").numpy()
    np.testing.assert_array_equal(numerical[1], read_table(checkpoints, projected, "__numerical__")[0])  # price
    assert not np.allclose(numerical[0], numerical[1])  # discount: the student's own random init
    assert np.abs(student.embedding.get_table("site").numpy()).max() < 1.0  # random, small (init std)
    again, _ = initial_student(checkpoints, plan, rows)  # seeded: the same student every time
    for a, b in zip(student.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_a_run_resumed_from_its_saved_state_ends_bit_for_bit_where_the_uninterrupted_run_ends(dropout: float) -> None:
    teacher, train_rows = tiny_model(4, seed=1), tiny_clicks(700)
    rows = train_rows.with_teacher_logit(cache_teacher_logits(teacher, train_rows))
    config = OfflineDistillConfig(batch_size=64, frozen_epochs=2, joint_epochs=1, num_threads=1)

    def student(seed: int = 2):  # noqa: ANN202
        return tiny_model(6, seed=seed, dropout=dropout)

    reference = ProgressiveDistillation(student(), rows, config, valid=tiny_clicks(300, seed=4)).run()
    steps = ProgressiveDistillation(student(), rows, config).total_steps
    assert steps == 3 * 11
    for stop in (4, 11, 12, 25, steps - 1):  # mid-epoch, the last step of an epoch, a phase boundary, ...
        saved = {}

        def callback(run, event):  # noqa: ANN001, ANN202
            if event == "step" and run.cursor.steps == stop:
                saved["state"] = tensor_bytes(run.state_dict())
                saved["weights"] = tensor_bytes(run.trainer.model.state_dict())
                raise KeyboardInterrupt  # the worker dies here

        with pytest.raises(KeyboardInterrupt):
            ProgressiveDistillation(student(), rows, config, valid=tiny_clicks(300, seed=4)).run(callback)
        torch.manual_seed(12345)  # whatever the process did in between
        resumed_model = student(seed=99)
        resumed_model.load_state_dict(load_tensor_bytes(saved["weights"], "weights"))
        run = ProgressiveDistillation(resumed_model, rows, config, valid=tiny_clicks(300, seed=4))
        run.load_state_dict(load_tensor_bytes(saved["state"], "state"))
        result = run.run()
        for name, value in reference.student.state_dict().items():
            assert torch.equal(result.student.state_dict()[name], value), (stop, name)
        assert [p.train_loss for p in result.phases] == [p.train_loss for p in reference.phases]
        assert [p.valid for p in result.phases] == [p.valid for p in reference.phases]
        assert [p.steps for p in result.phases] == [22, 11]


def test_two_data_parallel_processes_match_one_process_at_the_same_global_batch() -> None:
    """DDP over 2 processes (gloo, 127.0.0.1): every weight within 1e-5 of the 1-process run after 33 steps;
    the global batch of 96 rows (the last one 40) is split 48/48 (20/20) and the loss scaled per rank."""
    teacher, rows = tiny_model(4, seed=1), tiny_clicks(1000)
    rows = rows.with_teacher_logit(cache_teacher_logits(teacher, rows))
    results = {}
    for world in (1, 2):
        student = tiny_model(6, seed=2)
        plan = plan_for(student, distillation={"frozen_epochs": 1, "joint_epochs": 2}, optim={"batch_size": 96},
                        world_size=world)
        _, results[world] = train(plan, DistillationInputs(train=rows, valid=None, student=student), None)
    one, two = results[1].student.state_dict(), results[2].student.state_dict()
    differences = {name: float((one[name] - two[name]).abs().max()) for name in one}
    assert max(differences.values()) <= 1e-5, differences
    moved = float((one["embedding.table.weight"] - tiny_model(6, seed=2).state_dict()["embedding.table.weight"]).abs().max())
    assert moved > 1e-3  # they trained (the match is not two untouched models)
    assert [p.steps for p in results[2].phases] == [p.steps for p in results[1].phases] == [11, 22]


def test_data_parallel_adaptive_lambda_is_one_controller_on_every_rank(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adaptive λ over 2 processes: rank 0 measures the student on the validation rows and every rank's
    controller observes that figure (a rank that took another λ would train on another loss, and DDP would
    average the two). Rank 1's controller (λ trace, EMAs, λ) equals rank 0's, which the checkpoints and the
    manifest hold; the trace matches the 1-process run's at the same global batch within 1e-5 and so do the
    weights (the DDP test's tolerance: the weights differ by float summation order only, and the gap is a
    LogLoss of those weights). With BatchNorm each rank used to measure its own shard's running statistics
    and the ranks' controllers drifted apart; they now agree there too (the run then differs from 1 process
    through the per-shard batch statistics, as any BatchNorm under DDP without SyncBatchNorm does)."""
    from crossadapt.models import build_model, parse_model_config
    from services.offline_distiller import ddp

    seen: list[tuple[dict, list[dict]]] = []
    check = ddp.check_ranks_agree

    def spy(mine, others):  # records what rank 0 compares, then compares
        seen.append((mine, others))
        check(mine, others)

    monkeypatch.setattr(ddp, "check_ranks_agree", spy)
    teacher, rows, valid = tiny_model(4, seed=1), tiny_clicks(1000), tiny_clicks(200, seed=5)
    rows = rows.with_teacher_logit(cache_teacher_logits(teacher, rows))
    valid = valid.with_teacher_logit(cache_teacher_logits(teacher, valid))
    # λ moves from the first check (no warm-up, a 1 % gap saturates), checked every 2 of the 33 steps
    adaptive = {"gap_onset": 0.0, "gap_saturation": 0.01, "offline_eval_every_steps": 2, "offline_valid_rows": 200,
                "offline": {"warmup": 0, "ema_window": 2, "max_change": 0.2}}

    def student(batch_norm: bool = False):
        torch.manual_seed(2)
        return build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 6, "hidden_units": [8],
                                               "embedding_init_std": 0.05, "batch_norm": batch_norm}), TINY_SPEC)

    def run(world: int, batch_norm: bool = False):
        model = student(batch_norm)
        plan = plan_for(model, distillation={"frozen_epochs": 1, "joint_epochs": 2}, optim={"batch_size": 96},
                        world_size=world, adaptive=adaptive)
        return train(plan, DistillationInputs(train=rows, valid=valid, student=model), None)

    _, one = run(1)
    assert not seen  # one process: no rank to compare
    two_run, two = run(2)
    (mine, others), = seen
    assert mine == two_run.state_dict()["adaptive"] and others == [mine]  # rank 1's controller is rank 0's
    assert [list(entry) for entry in two.kd_weight_trace] == mine["trace"]
    assert [step for step, _, _ in two.kd_weight_trace] == [step for step, _, _ in one.kd_weight_trace] == \
        list(range(2, 34, 2))
    for (_, gap_1, weight_1), (_, gap_2, weight_2) in zip(one.kd_weight_trace, two.kd_weight_trace, strict=True):
        assert abs(gap_1 - gap_2) <= 1e-5 and abs(weight_1 - weight_2) <= 1e-5
    assert min(weight for _, _, weight in one.kd_weight_trace) < 0.2  # λ moved (0.7 to near the floor)
    first, second = one.student.state_dict(), two.student.state_dict()
    assert max(float((first[name] - second[name]).abs().max()) for name in first) <= 1e-5

    seen.clear()
    run(2, batch_norm=True)  # failed in check_ranks_agree before rank 0's figure was broadcast
    (mine, others), = seen
    assert others == [mine] and len(mine["trace"]) == 16


def test_the_service_trains_the_cores_kd_gate_and_target() -> None:
    """The service's run is the core's ProgressiveDistillation with the request's kd_gate and target: equal
    weights to the core run with those settings, other weights than with the other gate or label."""
    from dataclasses import replace

    teacher, rows = tiny_model(4, seed=1), tiny_clicks(600)
    rows = rows.with_teacher_logit(cache_teacher_logits(teacher, rows))
    rows = replace(rows, conversion=(rows.label * (np.arange(len(rows)) % 3 == 0)).astype(np.float32))
    trained = {}
    for gate, target in (("teacher_better", "click"), ("all", "click"), ("teacher_better", "conversion")):
        plan = plan_for(tiny_model(6, seed=2), distillation={"kd_gate": gate}, optim={"batch_size": 64},
                        target=target)
        _, result = train(plan, DistillationInputs(train=rows, valid=None, student=tiny_model(6, seed=2)), None)
        core = OfflineDistillConfig(batch_size=64, kd_gate=gate, target=target)
        reference = ProgressiveDistillation(tiny_model(6, seed=2), rows, core).run()
        for name, value in reference.student.state_dict().items():
            torch.testing.assert_close(result.student.state_dict()[name], value, rtol=0, atol=0)
        trained[gate, target] = result.student.state_dict()["embedding.table.weight"]
    weights = list(trained.values())
    assert all(float((a - b).abs().max()) > 1e-4 for i, a in enumerate(weights) for b in weights[i + 1:])


def test_bad_sample_rows_fail_naming_the_column() -> None:
    rows = tiny_clicks(50)
    check_rows(rows, TINY_SPEC, "sample")
    rows.categorical[3, 1] = 12
    with pytest.raises(FailedPreconditionError) as error:
        check_rows(rows, TINY_SPEC, "sample 'x'")
    assert error.value.field == "item" and "0..11" in error.value.message
    rows = tiny_clicks(50).with_teacher_logit(np.full(50, np.nan, dtype=np.float32))
    with pytest.raises(FailedPreconditionError) as error:
        check_rows(rows, TINY_SPEC, "sample 'x'")
    assert error.value.field == "teacher_logit"


def test_world_size_one_trains_in_this_process_without_a_process_group(monkeypatch: pytest.MonkeyPatch) -> None:
    """One process: the core loop on the bare model, no torch.distributed group, no DDP wrapper, no rank
    subprocess (the worker's default path costs what the in-process switch's does)."""
    import torch.distributed as dist

    from services.offline_distiller import ddp, pipeline

    def no_ddp(*_args, **_kwargs):
        raise AssertionError("world_size 1 went through the data-parallel launcher")

    monkeypatch.setattr(pipeline, "train_data_parallel", no_ddp)
    monkeypatch.setattr(ddp, "_spawn", no_ddp)
    monkeypatch.setattr(dist, "init_process_group", no_ddp)
    monkeypatch.setattr(torch.nn.parallel, "DistributedDataParallel", no_ddp)
    teacher, rows = tiny_model(4, seed=1), tiny_clicks(300)
    rows = rows.with_teacher_logit(cache_teacher_logits(teacher, rows))
    student = tiny_model(6, seed=2)
    run, result = train(plan_for(student, optim={"batch_size": 64}), DistillationInputs(train=rows, valid=None,
                                                                                      student=student), None)
    assert not run.distributed and run.world_size == 1 and not dist.is_initialized()
    assert result.student is student and result.phases[-1].steps == 5


@pytest.mark.parametrize("modules", [["offline_distiller"], ["online_codistiller"],
                                     ["offline_distiller", "online_codistiller"]])
def test_the_worker_imports_the_optimiser_runtime_before_its_pool_forks(modules: list[str]) -> None:
    """`worker_init` (the worker's main process, before prefork's fork) runs the training services' preload,
    so a pool process's first training task does not import torch._dynamo on its clock; a worker of both
    queues connects it once."""
    import subprocess
    import sys

    imports = "; ".join(f"import services.{name}.tasks" for name in modules)
    code = ("import sys; from celery.signals import worker_init; "
            "from services.common.task_steps import preload_training_runtime as p; " + imports + "; "
            "assert 'torch._dynamo' not in sys.modules; "
            "assert sum(1 for _, r in worker_init.receivers if r is p or (callable(r) and r() is p)) == 1; "
            "worker_init.send(sender=None); assert 'torch._dynamo' in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]


def test_local_workers_train_with_the_callers_thread_count(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A local platform's workers get the caller's CROSSADAPT_NUM_THREADS (so a worker and an in-process run
    compare at one thread count), never its other CROSSADAPT_* settings."""
    from services.local.stack import LocalPlatform

    monkeypatch.setenv("CROSSADAPT_NUM_THREADS", "1")
    monkeypatch.setenv("CROSSADAPT_STORE_URL", "s3://elsewhere/x")
    env = LocalPlatform.embedded(tmp_path).env
    assert env["CROSSADAPT_NUM_THREADS"] == "1" and "CROSSADAPT_STORE_URL" not in env
    assert env["CROSSADAPT_HOME"] == str(tmp_path / "home")
