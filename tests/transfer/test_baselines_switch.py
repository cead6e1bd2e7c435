"""Baselines on the switch's terms: a vocabulary that grew with the stream, and the pCVR target."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa
import pytest
import torch

from crossadapt.data import DatasetSchema, PrepareConfig, PreparedDataset, SplitArrays, append_split, prepare_dataset
from crossadapt.data.growth import GrowthConfig, ids_for_sizes, version_for_sizes
from crossadapt.models import build_model, parse_model_config
from crossadapt.models.layers.embedding import FeatureEmbedding
from crossadapt.models.growth import table_sizes
from crossadapt.training import evaluate_model
from crossadapt.transfer.experiments.baselines import BASELINES, BaselineConfig, run_baseline
from crossadapt.transfer.experiments.methods import MethodContext, run_baseline_method
from crossadapt.transfer.switch import begin_switch, obtain_teacher
from crossadapt.transfer.switch_config import (
    OfflineSection,
    OptimSection,
    SamplingSection,
    TeacherTraining,
    parse_switch_config,
)

SCHEMA = DatasetSchema(label="y", timestamp="t", categorical=["c", "d"], numerical=["x"])
MODEL = parse_model_config({"architecture": "mlp", "embedding_dim": 4, "hidden_units": [8]})
STUDENT = parse_model_config({"architecture": "mlp", "embedding_dim": 3, "hidden_units": [8]})
OLD = [f"v{i}" for i in range(20)]
ONLINE = OLD[:14] + [f"n{i}" for i in range(6)]  # 6 of the online day's 20 values (30%) are new


def _rows(values: list[str], start: int, n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    c = rng.choice(values, n)
    effect = {v: rng.normal(0.0, 1.5) for v in values}
    p = 1.0 / (1.0 + np.exp(-np.array([effect[v] for v in c])))
    return pa.table({"t": np.arange(start, start + n), "c": c, "d": rng.choice(["p", "q"], n),
                     "x": rng.standard_normal(n), "y": (rng.random(n) < p).astype(np.int64)})


@pytest.fixture(scope="module")
def grown(tmp_path_factory) -> tuple[PreparedDataset, object]:
    """A dataset whose online day grew the vocabulary to version 2 (min_count 2) and whose test day grew it to
    version 3 (values newer than the online day's); returns it and the version-1 feature spec. A teacher of
    version 1 is saved beside it (``../teacher``)."""
    folder = tmp_path_factory.mktemp("grown") / "ds"
    dataset = prepare_dataset(_rows(OLD, 0, 2000, 0), folder, schema=SCHEMA,
                              config=PrepareConfig(min_count=1, split="4:4:1:1"))
    v1_spec = dataset.feature_spec
    obtain_teacher(dataset, TeacherTraining(model=MODEL), folder.parent / "teacher", seed=0, batch_size=256)
    growth = GrowthConfig(min_count=2)
    append_split(dataset, "online", _rows(ONLINE, 10_000, 1000, 1), overwrite=True, growth=growth)
    append_split(PreparedDataset.open(folder), "test", _rows(ONLINE + ["m0", "m1"], 20_000, 600, 2),
                 overwrite=True, growth=growth)
    dataset = PreparedDataset.open(folder)
    assert dataset.manifest.vocab_version == 3
    return dataset, v1_spec


def _version_sizes(dataset: PreparedDataset, version: int) -> list[int]:
    entry = next(v for v in dataset.vocabulary.history if v.version == version)
    return [entry.sizes[field] for field in dataset.vocabulary.fields]


def _context(splits: dict[str, SplitArrays], spec, **sections) -> MethodContext:
    torch.manual_seed(0)
    return MethodContext(splits=splits, feature_spec=spec, teacher=build_model(MODEL, spec), student_config=STUDENT,
                         optim=OptimSection(batch_size=128), threads=1, **sections)


@pytest.fixture(scope="module")
def growing_switch(grown, tmp_path_factory):
    """A switch config with every baseline and online.grow_vocabulary on a version-1 teacher checkpoint, begun
    as ``crossadapt switch`` begins it (data, teacher, the baselines' context)."""
    dataset, _ = grown
    raw = {"data": {"dir": str(dataset.path)}, "teacher": {"checkpoint": str(dataset.path.parent / "teacher")},
           "student": {"model": STUDENT.model_dump()}, "baselines": list(BASELINES), "threads": 1,
           "optim": {"batch_size": 128}, "online": {"grow_vocabulary": True}}
    return begin_switch(parse_switch_config(raw), tmp_path_factory.mktemp("switch"))


@pytest.mark.parametrize("name", BASELINES)
def test_each_baseline_grows_to_the_online_version_as_the_switch_does(grown, growing_switch, name):
    dataset, v1_spec = grown
    online = dataset.split("online")
    new_rows = float(np.mean(online.categorical[:, 0] >= v1_spec.categorical[0].vocab_size))
    assert 0.2 < new_rows < 0.4  # ~30% of the online rows carry a new id
    # As finish_switch runs each listed baseline: the student is built from the (older) teacher's spec.
    assert name in growing_switch.config.baselines
    outcome = run_baseline_method(growing_switch.ctx, name)
    v2 = _version_sizes(dataset, 2)
    assert v2 != [f.vocab_size for f in v1_spec.categorical]
    assert table_sizes(outcome.model) == v2
    sizes = dict(zip(dataset.vocabulary.fields, table_sizes(outcome.model)))
    assert version_for_sizes(dataset.vocabulary, sizes).version == 2  # the online day's version, as CrossAdapt's
    if outcome.teacher is not None:
        assert table_sizes(outcome.teacher) == v2


def test_test_split_is_scored_with_the_grown_ids_and_newer_ids_as_unk(grown):
    dataset, v1_spec = grown
    splits = {key: dataset.split(key) for key in ("online", "test")}
    v1 = [f.vocab_size for f in v1_spec.categorical]
    v2 = _version_sizes(dataset, 2)
    config = BaselineConfig(batch_size=128, window_batches=2, num_threads=1, grow_vocabulary=True)
    torch.manual_seed(1)
    result = run_baseline("Scratch-Online", student=build_model(STUDENT, v1_spec), splits=splits, config=config)
    test = splits["test"]
    assert (test.categorical[:, 0] >= v2[0]).any()  # version-3 ids: beyond even the grown table
    grown_ids = evaluate_model(result.model, replace(test, categorical=ids_for_sizes(test.categorical, v2)))
    unk_ids = evaluate_model(result.model, replace(test, categorical=ids_for_sizes(test.categorical, v1)))
    assert result.metrics["logloss"] == pytest.approx(grown_ids["logloss"], abs=1e-9)
    assert result.metrics["auc"] == pytest.approx(grown_ids["auc"], abs=1e-9)
    assert abs(result.metrics["logloss"] - unk_ids["logloss"]) > 1e-5

    # Without growth the tables stay at version 1 and newer ids read as <UNK> (never another field's rows).
    torch.manual_seed(1)
    frozen = run_baseline("Scratch-Online", student=build_model(STUDENT, v1_spec), splits=splits,
                          config=config.model_copy(update={"grow_vocabulary": False}))
    assert table_sizes(frozen.model) == v1
    assert frozen.metrics["logloss"] == pytest.approx(evaluate_model(
        frozen.model, replace(test, categorical=ids_for_sizes(test.categorical, v1)))["logloss"], abs=1e-9)


def test_kd_baseline_refuses_a_teacher_with_more_rows_than_its_student(grown):
    dataset, v1_spec = grown
    splits = {key: dataset.split(key) for key in ("train", "online")}
    config = BaselineConfig(batch_size=128, num_threads=1, grow_vocabulary=True)
    with pytest.raises(ValueError, match="projected rows"):
        run_baseline("Vanilla-KD", student=build_model(STUDENT, v1_spec),
                     teacher=build_model(MODEL, dataset.feature_spec), splits=splits, config=config)


def _with_conversion(arrays: SplitArrays, seed: int) -> SplitArrays:
    rng = np.random.default_rng(seed)
    return replace(arrays, conversion=(arrays.label * (rng.random(len(arrays)) < 0.35)).astype(np.float32))


@pytest.mark.parametrize("name", BASELINES)
def test_pcvr_switch_baselines_train_and_score_on_the_clicked_rows_conversions(tiny_data, tiny_spec, name):
    splits = {key: _with_conversion(tiny_data(n, seed), seed)
              for key, n, seed in (("hist", 300, 1), ("train", 400, 2), ("online", 300, 3), ("test", 400, 4))}
    clicked = {key: int(split.label.sum()) for key, split in splits.items()}
    ctx = _context(splits, tiny_spec, offline=OfflineSection(sampling=SamplingSection(target="conversion")))
    rows: list[int] = []  # rows of every training-mode lookup of a student-width table (teachers score in eval mode)
    hook = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, out: rows.append(int(out.shape[0])) if isinstance(module, FeatureEmbedding)
        and module.training and module.embedding_dim == STUDENT.embedding_dim else None)
    try:
        run_baseline_method(ctx, name)
    finally:
        hook.remove()
    offline = {"Scratch-Online": 0, "Full-Retrain": clicked["hist"] + clicked["train"]}.get(name, clicked["train"])
    assert sum(rows) == offline + clicked["online"]

    # The labels: the stream's prequential record and the test figures are the clicked rows' conversions.
    config = BaselineConfig(batch_size=128, num_threads=1, target="conversion")
    torch.manual_seed(0)
    result = run_baseline(name, student=build_model(STUDENT, tiny_spec), teacher=ctx.teacher, splits=splits,
                          config=config)
    online, test = splits["online"], splits["test"]
    assert result.online.rows == clicked["online"]
    conversion_rate = float(online.conversion[online.label > 0.5].mean())
    assert result.online.student_prequential["positive_rate"] == pytest.approx(conversion_rate, abs=1e-6)
    assert conversion_rate < 0.5 < 1.0 == float(online.label[online.label > 0.5].mean())
    assert result.metrics["rows"] == clicked["test"]
    assert result.metrics == evaluate_model(result.model, test, target="conversion")
