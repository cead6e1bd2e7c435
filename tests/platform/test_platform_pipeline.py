"""The projection map-reduce steps in-process (no Celery): layout, plan validation, idempotent steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from crossadapt.checkpoint import save_checkpoint
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.spec import CategoricalField, FeatureSpec
from crossadapt.transfer import project_table
from services.common.errors import InvalidArgumentError, NotFoundError
from services.common.operations import FileOperationStore
from services.common.storage import CheckpointStore, LocalObjectStore
from services.projector import pipeline
from services.common.storage.tables import export_model_tables, read_table, shard_bounds, upload_table_checkpoint

RNG = np.random.default_rng(3)
USER = (RNG.standard_normal((10_000, 12)) * np.geomspace(2, 0.1, 12)).astype(np.float32)
ITEM = RNG.standard_normal((777, 12)).astype(np.float32)


@pytest.fixture
def ctx(tmp_path: Path) -> pipeline.ProjectorContext:
    store = CheckpointStore(LocalObjectStore(tmp_path / "store"))
    upload_table_checkpoint(store, "teacher", {"user": USER, "item": ITEM}, num_shards=8, vocab_hash="v" * 64)
    return pipeline.ProjectorContext(store, FileOperationStore(tmp_path / "ops"), chunk_rows=999)


def _plan(ctx: pipeline.ProjectorContext, width: int, operation_id: str = "op", **options) -> pipeline.ProjectionPlan:  # noqa: ANN003
    plan = pipeline.plan_projection(ctx.checkpoints, operation_id=operation_id, teacher_name="teacher",
                                    teacher_version="", student_name="student", width=width, seed=4,
                                    fields=options.pop("fields", []), **options)
    return plan.model_copy(update={"student_version": ctx.checkpoints.claim_version("student", operation_id)})


def _run(ctx: pipeline.ProjectorContext, plan: pipeline.ProjectionPlan):  # noqa: ANN202
    for field, layout in plan.tables.items():
        for shard in range(len(layout.shards)):
            if plan.needs_stats(field):
                pipeline.shard_stats(ctx, plan, field, shard, lambda _: None)
    pipeline.fit(ctx, plan)
    for field, layout in plan.tables.items():
        for shard in range(len(layout.shards)):
            pipeline.apply_shard(ctx, plan, field, shard, lambda _: None)
    return pipeline.publish(ctx, plan)


def test_one_million_rows_split_into_eight_equal_shards() -> None:
    bounds = shard_bounds(1_000_000, 8)
    assert bounds[0] == (0, 125_000) and bounds[-1] == (875_000, 1_000_000)
    assert all(stop - start == 125_000 for start, stop in bounds)
    assert len(shard_bounds(5, 8)) == 5  # never an empty shard


def test_upload_layout(ctx: pipeline.ProjectorContext) -> None:
    teacher = ctx.checkpoints.resolve("teacher")
    layout = teacher.manifest.extra["tables"]["user"]
    assert [s["file"] for s in layout["shards"]][:2] == ["tables/user/shard-00000.safetensors",
                                                         "tables/user/shard-00001.safetensors"]
    assert set(teacher.manifest.files) == {s["file"] for t in teacher.manifest.extra["tables"].values()
                                           for s in t["shards"]}
    assert np.array_equal(read_table(ctx.checkpoints, teacher, "item"), ITEM)


@pytest.mark.parametrize(("width", "kind"), [(24, "expand"), (12, "copy"), (5, "pca")])
def test_steps_reproduce_project_table(ctx: pipeline.ProjectorContext, width: int, kind: str) -> None:
    published = _run(ctx, _plan(ctx, width))
    teacher = ctx.checkpoints.resolve("teacher")
    manifest = published.manifest
    assert manifest.parent == teacher.ref and manifest.vocab_hash == teacher.manifest.vocab_hash
    assert manifest.feature_spec == teacher.manifest.feature_spec
    for field, table in (("user", USER), ("item", ITEM)):
        expected, report = project_table(table, width, seed=4)
        assert report.kind == kind == manifest.extra["projection"][field]["kind"]
        np.testing.assert_allclose(read_table(ctx.checkpoints, published, field), expected, rtol=0, atol=1e-5)
    assert ctx.checkpoints.objects.list_keys("operations/op")  # scratch stays until cleanup
    pipeline.cleanup(ctx, _plan(ctx, width, operation_id="op"))
    assert ctx.checkpoints.objects.list_keys("operations/op") == []


def test_steps_are_idempotent_and_reduce_waits_for_all_maps(ctx: pipeline.ProjectorContext) -> None:
    plan = _plan(ctx, 4, fields=["user"])
    for shard in range(7):
        pipeline.shard_stats(ctx, plan, "user", shard, lambda _: None)
    with pytest.raises(pipeline.NotReadyError):  # a chord fired early by a duplicate delivery
        pipeline.fit(ctx, plan)
    pipeline.shard_stats(ctx, plan, "user", 7, lambda _: None)
    pipeline.fit(ctx, plan)
    first = pipeline.apply_shard(ctx, plan, "user", 0, lambda _: None)
    assert pipeline.apply_shard(ctx, plan, "user", 0, lambda _: None) == first  # second delivery: no rewrite
    with pytest.raises(pipeline.NotReadyError):
        pipeline.publish(ctx, plan)
    assert ctx.checkpoints.versions("student") == []
    for shard in range(1, 8):
        pipeline.apply_shard(ctx, plan, "user", shard, lambda _: None)
    published = pipeline.publish(ctx, plan)
    assert pipeline.publish(ctx, plan) == published and ctx.checkpoints.versions("student") == [published.version]
    assert set(published.manifest.extra["tables"]) == {"user"}


def test_plan_validation_names_the_field(ctx: pipeline.ProjectorContext) -> None:
    cases = [
        ({"width": 0}, "width"),
        ({"width": 5000}, "width"),
        ({"fields": ["user", "user"]}, "fields"),
        ({"fields": ["nope"]}, "fields[0]"),
        ({"vocab_sizes": {"item": 778}}, "vocab_sizes[item]"),
        ({"vocab_sizes": {"zzz": 1}}, "vocab_sizes[zzz]"),
        ({"vocab_hash": "w" * 64}, "vocab_hash"),
        ({"student_name": "a/v000001"}, "student_name"),
        ({"teacher_name": ""}, "teacher.name"),
        ({"teacher_version": "latest!"}, "teacher.version"),
    ]
    for change, field in cases:
        args = {"operation_id": "op", "teacher_name": "teacher", "teacher_version": "", "student_name": "s",
                "width": 8, "seed": 0, "fields": [], **change}
        with pytest.raises(InvalidArgumentError) as caught:
            pipeline.plan_projection(ctx.checkpoints, **args)
        assert caught.value.field == field, change
    with pytest.raises(NotFoundError) as caught:
        pipeline.plan_projection(ctx.checkpoints, operation_id="op", teacher_name="ghost", teacher_version="",
                                 student_name="s", width=8, seed=0, fields=[])
    assert caught.value.field == "teacher"


def test_a_model_checkpoint_exports_to_sharded_tables(ctx: pipeline.ProjectorContext, tmp_path: Path) -> None:
    spec = FeatureSpec(categorical=(CategoricalField(name="user", vocab_size=50), CategoricalField(name="ad", vocab_size=9)),
                       numerical=("price",))
    torch.manual_seed(0)
    model = build_model(parse_model_config({"architecture": "mlp", "embedding_dim": 8, "hidden_units": [8]}), spec)
    save_checkpoint(tmp_path / "mlp", model, feature_spec=spec, vocab_hash="m" * 64)
    exported = export_model_tables(ctx.checkpoints, "mlp-tables", tmp_path / "mlp", num_shards=4)
    assert set(exported.manifest.extra["tables"]) == set(model.embedding.table_names())
    for name in model.embedding.table_names():
        np.testing.assert_array_equal(read_table(ctx.checkpoints, exported, name),
                                      model.embedding.get_table(name).numpy())
    assert exported.manifest.vocab_hash == "m" * 64 and exported.manifest.feature_spec == spec
