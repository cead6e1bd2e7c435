"""The sampling steps in-process (no Celery): the platform's sample is the core's, bad input is named."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from crossadapt.data import SplitArrays
from crossadapt.transfer.offline.distillation import cache_teacher_logits
from crossadapt.transfer.offline.sampling import SamplingConfig, StrategicSampler, assemble_pcvr_sample
from sampler_drift_fixtures import (  # noqa: F401 - local_objects is a fixture
    TINY_SPEC,
    assert_same_rows,
    local_objects,
    put_dataset,
    put_teacher,
    tiny_clicks,
    tiny_model,
)
from services.common.errors import (
    AlreadyExistsError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PlatformError,
)
from services.common.model_io import read_all
from services.common.operations import FileOperationStore
from services.common.storage import CheckpointStore, DatasetStore, ObjectStore
from services.sampler import pipeline

ROWS = 2_000


@pytest.fixture
def ctx(local_objects: ObjectStore, tmp_path: Path) -> pipeline.SamplerContext:  # noqa: F811
    put_dataset(local_objects, "clicks", tiny_clicks(ROWS, seed=1), partitions=3)
    put_teacher(local_objects, "teacher", tiny_model(seed=2))
    return pipeline.SamplerContext(CheckpointStore(local_objects), DatasetStore(local_objects),
                                   FileOperationStore(tmp_path / "ops"), chunk_rows=100)


def _plan(ctx: pipeline.SamplerContext, operation_id: str = "op-1", sample: str = "sample", **config):  # noqa: ANN003, ANN202
    parsed, target = pipeline.sampling_config(config)
    return pipeline.plan_sampling(ctx.checkpoints, ctx.datasets, operation_id=operation_id, dataset="clicks",
                                  teacher_name="teacher", teacher_version="", sample_name=sample, config=parsed,
                                  target=target)


def _run(ctx: pipeline.SamplerContext, plan: pipeline.SamplingPlan) -> dict:
    pipeline.select(ctx, plan)
    for block in range(plan.blocks):
        pipeline.score_block(ctx, plan, block, lambda _: None)
    return pipeline.publish(ctx, plan)


@pytest.mark.parametrize("config", [
    {"ratio": 0.2, "temporal_blocks": 5, "seed": 3},
    {"ratio": 0.3, "positive_ratio": 0.8, "temporal_blocks": 4, "seed": 9},  # positives oversampled
    {"ratio": 0.1, "disable_balance": True, "seed": 1},
])
def test_sample_equals_the_in_process_sample(ctx: pipeline.SamplerContext, config: dict) -> None:
    plan = _plan(ctx, **config)
    details = _run(ctx, plan)
    data = tiny_clicks(ROWS, seed=1)
    core_config = plan.config
    result = StrategicSampler(core_config).sample(data.label, data.timestamp)
    expected = data.take(result.indices)
    teacher = tiny_model(seed=2)
    expected = expected.with_teacher_logit(cache_teacher_logits(teacher, expected, 8192))
    sample = read_all(ctx.datasets, "sample")
    assert_same_rows(sample, expected)
    assert len(ctx.datasets.partitions("sample")) == 1  # one atomic object
    assert details["sampling"] == result.report.model_dump(mode="json")
    assert details["rows_per_block"] == [b.drawn_pos + b.drawn_neg for b in result.report.blocks]
    assert sum(details["rows_per_block"]) == details["rows"] == len(expected)
    assert details["positive_rate"] == pytest.approx(float(expected.label.mean()))
    prob = 1 / (1 + np.exp(-expected.teacher_logit.astype(np.float64)))
    assert details["teacher"]["mean_prob"] == pytest.approx(prob.mean(), rel=1e-5)
    assert details["teacher"]["pcoc"] == pytest.approx(prob.sum() / expected.label.sum(), rel=1e-5)
    assert 0.5 < details["teacher"]["auc"] <= 1.0
    assert ctx.checkpoints.objects.list_keys(f"operations/{plan.operation_id}") != []
    pipeline.cleanup(ctx, plan)
    assert ctx.checkpoints.objects.list_keys(f"operations/{plan.operation_id}") == []


def test_pcvr_sample_adds_unclicked_rows_labelled_with_the_teachers_pcvr(local_objects: ObjectStore,  # noqa: F811
                                                                        tmp_path: Path) -> None:
    data = tiny_clicks(3_000, seed=4, conversion=True)
    put_dataset(local_objects, "clicks", data, partitions=2)
    put_teacher(local_objects, "teacher", tiny_model(seed=5))
    ctx = pipeline.SamplerContext(CheckpointStore(local_objects), DatasetStore(local_objects),
                                  FileOperationStore(tmp_path / "ops"), chunk_rows=100)
    plan = _plan(ctx, ratio=0.5, temporal_blocks=3, unclicked_ratio=1.5, target="conversion", seed=6)
    details = _run(ctx, plan)
    sampler = StrategicSampler(plan.config)
    clicked = sampler.sample(data.conversion, data.timestamp, candidates=np.flatnonzero(data.label > 0.5))
    unclicked = sampler.augment_unclicked(clicked, data.label)
    teacher = tiny_model(seed=5)
    logits = cache_teacher_logits(teacher, data.take(unclicked), 8192)
    pcvr = assemble_pcvr_sample(clicked.indices, data.conversion, unclicked, 1 / (1 + np.exp(-logits.astype(np.float64))))
    expected = data.take(pcvr.indices)
    expected = replace(expected, conversion=pcvr.labels).with_teacher_logit(cache_teacher_logits(teacher, expected))
    sample = read_all(ctx.datasets, "sample")
    assert_same_rows(sample, expected)
    np.testing.assert_allclose(sample.conversion, pcvr.labels, atol=1e-6)
    assert details["unclicked_rows"] == len(unclicked) == round(1.5 * len(clicked.indices)) > 0
    assert (sample.label[details["clicked_rows"]:] == 0).all() and (sample.label[:details["clicked_rows"]] == 1).all()


def test_a_corrupt_block_output_is_rescored_not_published(ctx: pipeline.SamplerContext) -> None:
    plan = _plan(ctx, ratio=0.2, temporal_blocks=4, seed=3)
    pipeline.select(ctx, plan)
    for block in range(plan.blocks):
        pipeline.score_block(ctx, plan, block, lambda _: None)
    key = f"operations/{plan.operation_id}/blocks/00002.parquet"
    data = bytearray(ctx.checkpoints.objects.get_bytes(key))
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte: Parquet itself would not notice
    ctx.checkpoints.objects.put_bytes(key, bytes(data))
    details = pipeline.publish(ctx, plan)
    assert details["repaired_blocks"] == [2]
    expected_plan = _plan(ctx, operation_id="op-2", sample="clean", ratio=0.2, temporal_blocks=4, seed=3)
    _run(ctx, expected_plan)
    assert_same_rows(read_all(ctx.datasets, "sample"), read_all(ctx.datasets, "clean"), logit_atol=0)


def test_publish_is_idempotent_and_refuses_another_writers_sample(ctx: pipeline.SamplerContext) -> None:
    plan = _plan(ctx, ratio=0.2, temporal_blocks=2, seed=3)
    first = _run(ctx, plan)
    assert pipeline.publish(ctx, plan)["partition"] == first["partition"]  # a redelivered publish
    other = _plan(ctx, operation_id="op-other", sample="other", ratio=0.3, temporal_blocks=2, seed=3)
    other = other.model_copy(update={"sample_name": "sample"})  # raced for the same name since Start
    pipeline.select(ctx, other)
    for block in range(other.blocks):
        pipeline.score_block(ctx, other, block, lambda _: None)
    with pytest.raises(AlreadyExistsError):
        pipeline.publish(ctx, other)


def _code(call) -> tuple[str, str | None]:  # noqa: ANN001
    with pytest.raises(PlatformError) as caught:
        call()
    return type(caught.value).__name__, caught.value.field


def test_bad_requests_are_refused_at_start(ctx: pipeline.SamplerContext, local_objects: ObjectStore) -> None:  # noqa: F811
    put_teacher(local_objects, "other-vocab", tiny_model(seed=2), vocab_hash="c" * 64)
    put_dataset(local_objects, "taken", tiny_clicks(50), partitions=1)

    def start(**overrides):  # noqa: ANN003, ANN202
        args = {"dataset": "clicks", "teacher_name": "teacher", "teacher_version": "", "sample_name": "s", **overrides}
        config, target = pipeline.sampling_config(args.pop("config", {}))
        return lambda: pipeline.plan_sampling(ctx.checkpoints, ctx.datasets, operation_id="op", config=config,
                                              target=target, **args)

    assert _code(start(dataset="nope")) == ("NotFoundError", "dataset")
    assert _code(start(teacher_name="nope")) == ("CheckpointNotFoundError", "teacher")
    assert _code(start(teacher_version="v9")) == ("InvalidArgumentError", "teacher.version")
    assert _code(start(teacher_name="other-vocab")) == ("InvalidArgumentError", "teacher")
    assert _code(start(sample_name="taken")) == ("AlreadyExistsError", "sample_name")
    assert _code(start(sample_name="clicks")) == ("InvalidArgumentError", "sample_name")
    assert _code(start(sample_name="bad name!")) == ("InvalidArgumentError", "sample_name")
    assert _code(start(dataset_position=True)) == ("InvalidArgumentError", "dataset.position")
    assert _code(start(config={"target": "conversion"})) == ("InvalidArgumentError", "config.target")  # no column
    for config, field in [({"ratio": 1.5}, "config.ratio"), ({"ratio": -0.1}, "config.ratio"),
                          ({"positive_ratio": 1.2}, "config.positive_ratio"), ({"temporal_blocks": -2},
                          "config.temporal_blocks"), ({"temporal_blocks": 5000}, "config.temporal_blocks"),
                          ({"unclicked_ratio": 1.0}, "config.unclicked_ratio"), ({"target": "ctr"}, "config.target"),
                          ({"empty_block_policy": "drop"}, "config.empty_block_policy"),
                          ({"unclicked_ratio": float("inf"), "target": "conversion"}, "config.unclicked_ratio")]:
        assert _code(lambda config=config: pipeline.sampling_config(config)) == ("InvalidArgumentError", field), config
    wide = tiny_model(seed=2)
    from crossadapt.models.spec import CategoricalField, FeatureSpec

    other_spec = FeatureSpec(categorical=(CategoricalField(name="user_id", vocab_size=31),
                                          CategoricalField(name="item_id", vocab_size=12)), numerical=("price",))
    put_dataset(local_objects, "wider", tiny_clicks(50), partitions=1, spec=other_spec)
    del wide
    assert _code(start(dataset="wider")) == ("InvalidArgumentError", "teacher")


def test_bad_data_found_later_fails_naming_it(ctx: pipeline.SamplerContext, local_objects: ObjectStore) -> None:  # noqa: F811
    parts = put_dataset(local_objects, "broken", tiny_clicks(300), partitions=3)
    key = f"datasets/broken/{parts[1]}/data.parquet"
    local_objects.put_bytes(key, local_objects.get_bytes(key)[:100])  # truncated
    plan = _plan(ctx, sample="from-broken").model_copy(update={"dataset": "broken"})
    with pytest.raises(FailedPreconditionError, match=f"partition broken/{parts[1]} is unreadable"):
        pipeline.select(ctx, plan)
    few = _plan(ctx, sample="few", temporal_blocks=10).model_copy(update={"dataset": "tiny"})
    put_dataset(local_objects, "tiny", tiny_clicks(5), partitions=1)
    assert _code(lambda: pipeline.select(ctx, few)) == ("InvalidArgumentError", "dataset")
    from crossadapt.models.spec import FeatureSpec

    mixed = DatasetStore(local_objects)
    put_dataset(local_objects, "mixed", tiny_clicks(100), partitions=1)
    from datetime import datetime, timezone

    from services.common.model_io import split_table

    narrow = FeatureSpec(categorical=TINY_SPEC.categorical, numerical=())
    rows = tiny_clicks(100)
    narrow_rows = replace(rows, numerical=rows.numerical[:, :0])
    mixed.write_partition("mixed", datetime(2027, 1, 1, tzinfo=timezone.utc), split_table(narrow_rows, narrow))
    with pytest.raises(InvalidArgumentError, match="mixed/ts=20270101T000000Z"):
        pipeline.select(ctx, _plan(ctx, sample="m").model_copy(update={"dataset": "mixed"}))
    assert NotFoundError  # imported for the table of codes above
