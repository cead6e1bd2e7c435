"""The co-distiller's pipeline over a stream of a newer vocabulary version (#16), on a local store.

The models are of version 1 of the tiny vocabulary (``user``: 30 rows); the stream's first partition is
still version 1, the later ones version 2 (6 new users, ids 30..35; `distiller_fixtures.write_growing_stream`).
With ``grow_vocabulary``:

* Start accepts the stream (without it: INVALID_ARGUMENT naming the stream and the option);
* the newer partitions' ids are trained on, not refused; both models grow to version 2 when the stream
  reaches it, and every checkpoint's manifest names its own tables: spec (rows per field), the version's
  hash and number;
* a run stopped after a grown checkpoint resumes from it (the models rebuilt from the manifest's grown
  spec, not the request's sizes) and ends bit-for-bit where the uninterrupted run ends;
* the stream's partitions were written with their vocabulary (`write_split(vocabulary=)`), so every
  grown checkpoint carries version 2's values (`has_vocabulary`): the new users map to rows 30..35,
  the rows the tables grew; a stream written without them still trains, its grown checkpoints carry none;
* with target 'conversion' (pCVR: the clicked rows only) the run grows mid-stream as the clicked rows reach
  version 2 and ends bit-for-bit at the student and teacher the core's `codistill_online` trains in process
  on the whole stream (which grows both models up front): growth and the clicked-row batching compose
  (target 'click' too).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import torch

from distiller_fixtures import (
    EPOCH,
    GROWN_SPEC,
    GROWN_VOCABULARY,
    NEW_USERS,
    TINY_SPEC,
    TINY_VOCABULARY,
    VOCAB_HASH,
    tiny_clicks,
    tiny_model,
    write_growing_stream,
)
from crossadapt.training import select_target_rows
from crossadapt.transfer.online.codistillation import codistill_online
from services.common.errors import InvalidArgumentError
from services.common.model_io import (
    dataset_vocabulary,
    load_model,
    load_vocabulary,
    publish_model,
    read_all,
    write_split,
)
from services.common.operations import FileOperationStore
from services.common.proto import common_pb2
from services.common.proto import online_codistiller_pb2 as pb
from services.common.storage import CheckpointStore, DatasetStore, LocalObjectStore
from services.online_codistiller.context import CoDistillerContext
from services.online_codistiller.pipeline import run_codistillation
from services.online_codistiller.plan import plan_codistillation

BATCH, PARTITION_ROWS = 40, 120


class Stop(Exception):
    """Stands for the worker lost after a checkpoint."""


@pytest.fixture
def world(tmp_path):  # noqa: ANN001, ANN201
    objects = LocalObjectStore(tmp_path / "store")
    ctx = CoDistillerContext(checkpoints=CheckpointStore(objects), datasets=DatasetStore(objects),
                             operations=FileOperationStore(tmp_path / "ops"))
    for name, model in (("m/student", tiny_model(4, seed=2)), ("m/teacher", tiny_model(4, seed=1))):
        publish_model(ctx.checkpoints, name, model, feature_spec=TINY_SPEC, vocab_hash=VOCAB_HASH,
                      vocabulary=TINY_VOCABULARY)
    write_growing_stream(ctx.datasets, "stream", old_rows=PARTITION_ROWS, new_rows=3 * PARTITION_ROWS,
                         new_partitions=3)
    # "newer": version-2 partitions only, written without the vocabulary
    write_growing_stream(ctx.datasets, "newer", old_rows=0, new_rows=3 * PARTITION_ROWS, new_partitions=3,
                         with_vocabulary=False)
    return ctx


def _plan(ctx: CoDistillerContext, operation_id: str, grow: bool = True, stream: str = "stream",  # noqa: ANN202
          **config):
    request = pb.StartCoDistillationRequest(
        student=common_pb2.CheckpointRef(name="m/student"), teacher=common_pb2.CheckpointRef(name="m/teacher"),
        stream=common_pb2.DatasetRef(name=stream), student_name=f"{operation_id}/student",
        teacher_name=f"{operation_id}/teacher",
        config=pb.CoDistillationConfig(**{"batch_size": BATCH, "checkpoint_every_batches": 3,
                                          "teacher_update_interval": 2, "grow_vocabulary": grow, "seed": 3, **config}))
    return plan_codistillation(ctx.checkpoints, ctx.datasets, request, operation_id)


def _students(ctx: CoDistillerContext, name: str) -> list:
    return [ctx.checkpoints.resolve(name, version) for version in ctx.checkpoints.versions(name)]


def test_a_stream_of_a_newer_vocabulary_needs_growth(world) -> None:  # noqa: ANN001
    with pytest.raises(InvalidArgumentError) as error:  # seen at Start: the first partition is newer
        _plan(world, "op-off", grow=False, stream="newer")
    assert error.value.field == "stream" and "grow_vocabulary" in error.value.message
    with pytest.raises(InvalidArgumentError) as error:  # seen when the stream reaches it: names the partition
        run_codistillation(world, _plan(world, "op-off", grow=False), lambda *_, **__: None)
    assert error.value.field == "stream" and "stream/" in error.value.message
    assert _plan(world, "op-on", stream="newer").settings.online.grow_vocabulary


def test_the_models_grow_to_the_streams_version_and_each_checkpoint_names_its_tables(world) -> None:  # noqa: ANN001
    final = run_codistillation(world, _plan(world, "op-a"), lambda *_, **__: None)
    students = _students(world, "op-a/student")
    teachers = _students(world, "op-a/teacher")
    assert len(students) == len(teachers) >= 4
    first_grown = None
    for index, (student, teacher) in enumerate(zip(students, teachers, strict=True)):
        for published in (student, teacher):
            manifest = published.manifest
            users = manifest.feature_spec.categorical[0].vocab_size
            if users == 30:  # still the first (version 1) partition
                assert (manifest.vocab_hash, manifest.extra["vocab_version"]) == (VOCAB_HASH, 1)
                assert manifest.extra["has_vocabulary"]  # the version-1 vocabulary rides along
            else:
                assert users == 30 + NEW_USERS and manifest.feature_spec == GROWN_SPEC
                assert (manifest.vocab_hash, manifest.extra["vocab_version"]) == (GROWN_VOCABULARY.hash, 2)
                first_grown = index if first_grown is None else first_grown
            model, _ = load_model(world.checkpoints, published.name, published.version)
            assert model.embedding.get_table("user").shape[0] == users  # rebuilt from the manifest's spec
            vocabulary = load_vocabulary(world.checkpoints, published)
            assert manifest.extra["has_vocabulary"] and vocabulary is not None
            assert (vocabulary.hash, vocabulary.version, vocabulary.size("user")) == (
                manifest.vocab_hash, manifest.extra["vocab_version"], users)
    # 3 batches of 40 rows per checkpoint: the first checkpoint is all version-1 rows, the second
    # holds version-2 rows and so grown tables.
    assert first_grown == 1 and students[-1].ref == final.ref
    # The new users' raw values map to the rows the tables grew (30..35), not to <UNK> (0).
    new_users = pa.array([f"new{i}" for i in range(NEW_USERS)])
    assert load_vocabulary(world.checkpoints, final).encode("user", new_users).tolist() == list(range(30, 36))
    assert sum(final.manifest.extra["rows_by_partition"].values()) == 4 * PARTITION_ROWS  # no row refused
    student, _ = load_model(world.checkpoints, final.name, final.version)
    initial = tiny_model(4, seed=2).embedding.get_table("user")
    grown_rows = student.embedding.get_table("user")[30:]
    assert not torch.allclose(grown_rows, torch.zeros_like(grown_rows))  # initialised, then trained on
    assert not torch.equal(student.embedding.get_table("user")[:30], initial)  # the old rows trained too


def test_a_run_stopped_after_growing_resumes_from_the_grown_checkpoint_bit_for_bit(world) -> None:  # noqa: ANN001
    uninterrupted = run_codistillation(world, _plan(world, "op-a"), lambda *_, **__: None)
    seen: list[str] = []

    def stop_after_second_checkpoint(*_, details=None, **__) -> None:  # noqa: ANN001, ANN002, ANN003
        if details and "student" in details and "rows_by_partition" in details:
            seen.append(details["student"])
            if len(seen) == 2:
                raise Stop

    plan = _plan(world, "op-b")
    with pytest.raises(Stop):
        run_codistillation(world, plan, stop_after_second_checkpoint)
    stopped_at = world.checkpoints.resolve(*seen[-1].rsplit("/", 1))
    assert stopped_at.manifest.feature_spec == GROWN_SPEC  # the resume must rebuild grown tables
    torch.manual_seed(1234)  # the resumed run owes nothing to the process's RNG
    resumed = run_codistillation(world, plan, lambda *_, **__: None)
    assert resumed.manifest.extra["rows_by_partition"] == uninterrupted.manifest.extra["rows_by_partition"]
    ours, _ = load_model(world.checkpoints, resumed.name, resumed.version)
    theirs, _ = load_model(world.checkpoints, uninterrupted.name, uninterrupted.version)
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name
    assert load_vocabulary(world.checkpoints, resumed).hash == GROWN_VOCABULARY.hash  # the resumed run has the values


def test_a_stream_written_without_its_vocabulary_trains_and_its_grown_checkpoints_carry_none(world) -> None:  # noqa: ANN001
    final = run_codistillation(world, _plan(world, "op-c", stream="newer"), lambda *_, **__: None)
    assert final.manifest.feature_spec == GROWN_SPEC and final.manifest.vocab_hash == GROWN_VOCABULARY.hash
    assert not final.manifest.extra["has_vocabulary"] and load_vocabulary(world.checkpoints, final) is None


def test_a_stream_stores_each_vocabulary_version_and_resolves_older_hashes_from_newer_ones(world) -> None:  # noqa: ANN001
    datasets = world.datasets
    assert dataset_vocabulary(datasets, "stream", GROWN_VOCABULARY.hash, 2).hash == GROWN_VOCABULARY.hash
    older = dataset_vocabulary(datasets, "stream", VOCAB_HASH)  # no version named: found among the stored ones
    assert (older.hash, older.version) == (VOCAB_HASH, 1)
    assert dataset_vocabulary(datasets, "newer", GROWN_VOCABULARY.hash, 2) is None  # written without one
    assert dataset_vocabulary(datasets, "stream", "not-a-hash") is None
    with pytest.raises(InvalidArgumentError) as error:  # the values must be the version the ids are of
        write_split(datasets, "mismatch", tiny_clicks(4), GROWN_SPEC, vocab_hash=GROWN_VOCABULARY.hash, vocab_version=2,
                    vocabulary=TINY_VOCABULARY)
    assert error.value.field == "vocabulary"
    assert datasets.objects.list_children(f"{datasets.prefix}/mismatch") == []  # nothing written


def _with_conversions(rows, seed: int):
    """`rows` with a conversion column: about a third of the clicks convert, no unclicked row does."""
    rng = np.random.default_rng(seed)
    return replace(rows, conversion=(rows.label * (rng.random(len(rows)) < 0.35)).astype(np.float32))


@pytest.mark.parametrize("target", ["conversion", "click"])
def test_a_growing_run_ends_at_the_in_process_student_for_either_target(world, target: str) -> None:
    """Growth with target 'conversion' (and 'click', the same check without the row selection): the growing
    stream of `write_growing_stream` (one version-1 partition, three of version 2 with the new users), with
    conversions. The service batches the target's rows across partitions and grows both models before the
    first batch holding a version-2 row (mid-stream: its first checkpoint is still of version 1); the core
    selects the rows of the whole stream and grows up front. New rows start from the initialiser (the teacher
    has none of the new ids either) and no row is trained before it appears, so both end at the same
    models, bit for bit."""
    old = _with_conversions(tiny_clicks(PARTITION_ROWS, seed=5), seed=1)
    new = tiny_clicks(3 * PARTITION_ROWS, seed=6, first_timestamp=PARTITION_ROWS)
    rng = np.random.default_rng(0)
    newcomers = rng.random(len(new)) < 0.3
    new.categorical[newcomers, 0] = rng.integers(30, 30 + NEW_USERS, int(newcomers.sum()))
    new = _with_conversions(new, seed=2)
    write_split(world.datasets, "converting", old, TINY_SPEC, vocab_hash=VOCAB_HASH, vocab_version=1, start=EPOCH,
                vocabulary=TINY_VOCABULARY)
    write_split(world.datasets, "converting", new, GROWN_SPEC, vocab_hash=GROWN_VOCABULARY.hash, vocab_version=2,
                partitions=3, start=EPOCH.replace(hour=1), vocabulary=GROWN_VOCABULARY)
    # pCVR trains on the clicked rows: a batch spans both versions and new users are among them
    assert int(old.label.sum()) % BATCH and int((new.label * newcomers).sum()) > 0
    plan = _plan(world, f"op-{target}", stream="converting", target=target, checkpoint_every_batches=1)
    final = run_codistillation(world, plan, lambda *_, **__: None)
    students = _students(world, f"op-{target}/student")
    assert students[0].manifest.feature_spec == TINY_SPEC and final.manifest.feature_spec == GROWN_SPEC
    assert (final.manifest.vocab_hash, final.manifest.extra["vocab_version"]) == (GROWN_VOCABULARY.hash, 2)

    student, _ = load_model(world.checkpoints, plan.student.name, plan.student.version)
    teacher, _ = load_model(world.checkpoints, plan.teacher.name, plan.teacher.version)
    stream = read_all(world.datasets, "converting")  # each partition in its own version's ids
    config = plan.settings.core_config("cpu")
    assert (config.target, config.grow_vocabulary) == (target, True)
    expected = codistill_online(teacher, student, stream, config)
    rows = len(select_target_rows(stream, target))
    assert rows == (len(stream) if target == "click" else int(old.label.sum() + new.label.sum()))
    assert (final.manifest.extra["batches"], final.manifest.extra["rows"]) == (expected.batches, expected.rows) \
        == (-(-rows // BATCH), rows)
    ours, _ = load_model(world.checkpoints, final.name, final.version)
    co_teacher, _ = load_model(world.checkpoints, *final.manifest.extra["teacher"].rsplit("/", 1))
    for model, reference in ((ours, expected.student), (co_teacher, expected.teacher)):
        assert model.embedding.get_table("user").shape[0] == 30 + NEW_USERS
        for name, value in reference.state_dict().items():
            assert torch.equal(model.state_dict()[name], value), name
