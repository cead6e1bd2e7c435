"""Embedding projection: Theorem 1's guarantees, streaming, the map-reduce API and model wiring."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from crossadapt.bench.projection import run_projection_bench
from crossadapt.models import CategoricalField, CTRModel, FeatureSpec, build_model
from crossadapt.transfer import (
    Projection,
    ProjectionStats,
    fit_projection,
    project_model_embeddings,
    project_table,
)


def embedding_table(rows: int = 300, width: int = 12, seed: int = 0) -> np.ndarray:
    """float64 [rows, width] with a decaying spectrum, random axes and a clearly non-zero mean."""
    rng = np.random.default_rng(seed)
    axes, _ = np.linalg.qr(rng.standard_normal((width, width)))
    scales = 2.0 / np.arange(1, width + 1) ** 0.75
    return (rng.standard_normal((rows, width)) * scales) @ axes.T + rng.normal(0.0, 0.7, size=width)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def centred_gram(table: np.ndarray) -> np.ndarray:
    centred = table - table.mean(axis=0)
    return centred @ centred.T


# -- Theorem 1 (i), (ii): copy and orthogonal expansion keep every inner product ----------------------------------


def test_copy_returns_the_table_unchanged() -> None:
    table = embedding_table().astype(np.float32)
    projected, report = project_table(table, table.shape[1])
    assert report.kind == "copy" and report.gram_distortion == 0.0 and report.rows == len(table)
    np.testing.assert_array_equal(projected, table)
    assert projected is not table


@pytest.mark.parametrize(("dtype", "tolerance"), [(np.float32, 1e-5), (np.float64, 1e-10)])
def test_expansion_keeps_every_inner_product(dtype: type, tolerance: float) -> None:
    table = embedding_table()
    projected, report = project_table(table.astype(dtype), 40, seed=3, dtype=dtype)
    assert projected.shape == (len(table), 40) and projected.dtype == dtype and report.kind == "expand"
    reference = table.astype(dtype).astype(np.float64)
    assert relative_error(projected.astype(np.float64) @ projected.T.astype(np.float64),
                          reference @ reference.T) < tolerance


def test_expansion_weight_has_orthonormal_rows() -> None:
    projection = fit_projection(None, 12, 40, seed=5)
    assert projection.kind == "expand" and projection.weight.shape == (12, 40)
    assert projection.weight.dtype == np.float64
    np.testing.assert_allclose(projection.weight @ projection.weight.T, np.eye(12), atol=1e-12)


def test_expansion_is_a_haar_draw_not_biased_by_qr_signs() -> None:
    # Householder QR alone makes Q[0, 0] negative for every draw; the sign fix makes it symmetric about 0.
    first = np.array([fit_projection(None, 3, 6, seed=seed).weight[0, 0] for seed in range(400)])
    assert 0.4 < (first > 0).mean() < 0.6
    assert abs(first.mean()) < 0.05


# -- Theorem 1 (iii): PCA ----------------------------------------------------------------------------------------


def test_pca_gram_error_equals_discarded_spectrum() -> None:
    table = embedding_table(rows=400, width=12)
    projected, report = project_table(table, 5, dtype=np.float64)
    eigenvalues = np.linalg.eigvalsh(np.cov(table, rowvar=False, bias=True))[::-1]
    expected = len(table) ** 2 * np.sum(eigenvalues[5:] ** 2)
    measured = float(np.sum((centred_gram(table) - centred_gram(projected)) ** 2))
    assert report.kind == "pca"
    assert abs(measured - expected) / expected < 1e-8
    assert abs(report.gram_distortion - expected) / expected < 1e-8
    expected_relative = np.sum(eigenvalues[5:] ** 2) / np.sum(eigenvalues**2)
    assert report.relative_distortion == pytest.approx(expected_relative, rel=1e-8)


def test_pca_keeps_the_mean_projected_and_retains_the_top_variance() -> None:
    table = embedding_table(rows=400, width=12)
    projected, report = project_table(table, 4, dtype=np.float64)
    weight = fit_projection(ProjectionStats.from_chunk(table), 12, 4).weight
    np.testing.assert_allclose(projected, table @ weight, rtol=1e-12, atol=1e-12)  # E_S = E_T·W, mean not dropped
    np.testing.assert_allclose(projected.mean(axis=0), table.mean(axis=0) @ weight, atol=1e-12)
    eigenvalues = np.asarray(report.eigenvalues)
    assert np.all(np.diff(eigenvalues) <= 0)
    np.testing.assert_allclose(eigenvalues, np.linalg.eigvalsh(np.cov(table, rowvar=False, bias=True))[::-1],
                               rtol=1e-9, atol=1e-12)
    assert projected.var(axis=0).sum() == pytest.approx(eigenvalues[:4].sum(), rel=1e-9)
    assert report.explained_variance_ratio == pytest.approx(eigenvalues[:4].sum() / eigenvalues.sum(), rel=1e-12)


def test_pca_basis_is_orthonormal_with_deterministic_signs() -> None:
    weight = fit_projection(ProjectionStats.from_chunk(embedding_table()), 12, 6).weight
    np.testing.assert_allclose(weight.T @ weight, np.eye(6), atol=1e-12)
    largest = weight[np.argmax(np.abs(weight), axis=0), np.arange(6)]
    assert np.all(largest > 0)


def test_pca_beats_random_orthonormal_projections() -> None:
    table = embedding_table(rows=300, width=12)
    pca_error = np.sum((centred_gram(table) - centred_gram(project_table(table, 4, dtype=np.float64)[0])) ** 2)
    rng = np.random.default_rng(1)
    for _ in range(5):
        basis, _ = np.linalg.qr(rng.standard_normal((12, 4)))
        random_error = np.sum((centred_gram(table) - centred_gram(table @ basis)) ** 2)
        assert pca_error < random_error


# -- streaming and the map-reduce API ----------------------------------------------------------------------------


@pytest.mark.parametrize("width", [12, 30, 5])
def test_streaming_in_chunks_equals_one_shot(width: int) -> None:
    table = embedding_table(rows=250, width=12)
    one_shot, report = project_table(table, width, seed=2, chunk_rows=10_000, dtype=np.float64)
    streamed, streamed_report = project_table(table, width, seed=2, chunk_rows=7, dtype=np.float64)
    np.testing.assert_allclose(streamed, one_shot, rtol=1e-12, atol=1e-12)
    assert streamed_report.kind == report.kind


def test_stats_merge_is_associative_and_equals_whole_table_stats() -> None:
    # Integer-valued rows make every float64 sum exact, so equality is exact whatever the order.
    table = np.random.default_rng(0).integers(-50, 50, size=(301, 6)).astype(np.float32)
    a, b, c = (ProjectionStats.from_chunk(part) for part in np.array_split(table, 3))
    whole = ProjectionStats.from_chunk(table, chunk_rows=17)
    for merged in (a.merge(b).merge(c), a.merge(b.merge(c)), ProjectionStats.sum([c, a, b])):
        assert merged.count == whole.count == 301
        np.testing.assert_array_equal(merged.sum, whole.sum)
        np.testing.assert_array_equal(merged.outer, whole.outer)
    np.testing.assert_array_equal(whole.sum, table.astype(np.float64).sum(axis=0))


def test_sharded_map_reduce_equals_project_table_through_json() -> None:
    table = embedding_table(rows=500, width=12).astype(np.float32)
    shards = np.array_split(table, 4)
    wire = [json.dumps(ProjectionStats.from_chunk(shard).to_dict()) for shard in shards]
    stats = ProjectionStats.sum(ProjectionStats.from_dict(json.loads(message)) for message in wire)
    projection = Projection.from_dict(json.loads(json.dumps(fit_projection(stats, 12, 5).to_dict())))
    np.testing.assert_array_equal(projection.weight, fit_projection(stats, 12, 5).weight)
    mapped = np.concatenate([projection.apply(shard) for shard in shards])
    expected, report = project_table(table, 5)
    assert mapped.dtype == np.float32 and report.rows == 500 and projection.report.rows == 500
    np.testing.assert_allclose(mapped, expected, rtol=1e-5, atol=1e-5)


def test_seed_determines_the_expansion() -> None:
    table = embedding_table()
    first, _ = project_table(table, 20, seed=7)
    np.testing.assert_array_equal(first, project_table(table, 20, seed=7)[0])
    assert not np.allclose(first, project_table(table, 20, seed=8)[0])
    np.testing.assert_array_equal(project_table(table, 5)[0], project_table(table, 5)[0])


def test_torch_in_torch_out_and_memmap_output(tmp_path) -> None:
    table = embedding_table().astype(np.float32)
    projected, _ = project_table(torch.from_numpy(table), 20, seed=1)
    assert isinstance(projected, torch.Tensor) and projected.dtype == torch.float32
    np.testing.assert_array_equal(projected.numpy(), project_table(table, 20, seed=1)[0])
    out = np.lib.format.open_memmap(tmp_path / "student.npy", mode="w+", dtype=np.float32, shape=(len(table), 5))
    project_table(np.asarray(table), 5, out=out, chunk_rows=64)
    out.flush()
    np.testing.assert_allclose(np.load(tmp_path / "student.npy"), project_table(table, 5)[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("d_in", "d_out"), [(16, 32), (32, 16)])
def test_large_table_needs_little_memory_beyond_its_output(d_in: int, d_out: int) -> None:
    # A float64 copy of the table, or an unchunked matmul temporary, would add at least one output's worth.
    figures = run_projection_bench(rows=500_000, d_in=d_in, d_out=d_out)
    assert figures["kind"] == ("expand" if d_out > d_in else "pca")
    assert figures["output_mb"] == pytest.approx(500_000 * d_out * 4 / 2**20, abs=0.1)
    assert figures["ratio"] < 1.5


# -- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("width", [0, -3, True, 2.5])
def test_bad_width_is_rejected(width: object) -> None:
    with pytest.raises(ValueError, match="width"):
        project_table(embedding_table(), width)  # type: ignore[arg-type]


def test_non_finite_table_is_rejected_naming_row_and_column() -> None:
    table = embedding_table()
    table[123, 4] = np.nan
    for width in (5, 12, 20):  # the stats pass (PCA) and the apply pass (copy, expansion) both check
        with pytest.raises(ValueError, match="row 123, column 4"):
            project_table(table, width, chunk_rows=50)


def test_bad_stats_and_shapes_are_rejected() -> None:
    stats = ProjectionStats.from_chunk(embedding_table())
    with pytest.raises(ValueError, match="empty stats"):
        fit_projection(ProjectionStats.from_chunk(np.empty((0, 12))), 12, 5)
    with pytest.raises(ValueError, match="needs the table's stats"):
        fit_projection(None, 12, 5)
    with pytest.raises(ValueError, match="width 12 but d_in is 10"):
        fit_projection(stats, 10, 5)
    with pytest.raises(ValueError, match="NaN"):
        fit_projection(ProjectionStats(3, [np.nan] * 12, np.eye(12)), 12, 5)
    with pytest.raises(ValueError, match="empty"):
        ProjectionStats.sum([])
    with pytest.raises(ValueError, match="merge"):
        stats.merge(ProjectionStats.from_chunk(np.ones((3, 4))))
    with pytest.raises(ValueError, match="lacks"):
        ProjectionStats.from_dict({"count": 1, "sum": [0.0]})
    with pytest.raises(ValueError, match="2-D"):
        project_table(np.ones(12), 5)
    with pytest.raises(ValueError, match="chunk has width 10"):
        fit_projection(stats, 12, 5).apply(np.ones((4, 10)))
    with pytest.raises(ValueError, match="chunk_rows"):
        project_table(embedding_table(), 5, chunk_rows=-1)
    with pytest.raises(ValueError, match="output dtype must be float32 or float64"):
        project_table(embedding_table(), 5, dtype=np.int32)
    with pytest.raises(ValueError, match="not orthonormal"):
        Projection.from_dict({**fit_projection(None, 3, 5).to_dict(), "weight": np.ones((3, 5)).tolist()})


# -- model wiring --------------------------------------------------------------------------------------------


def ctr_model(architecture: str, spec: FeatureSpec, width: int) -> CTRModel:
    config = {"architecture": architecture, "embedding_dim": width, "hidden_units": [16], "embedding_init_std": 0.1}
    return build_model(config, spec)


def spec_of(**vocab: int) -> FeatureSpec:
    return FeatureSpec(categorical=tuple(CategoricalField(name=n, vocab_size=v) for n, v in vocab.items()),
                       numerical=("price", "age"))


def test_project_model_embeddings_sets_tables_and_keeps_missing_fields() -> None:
    torch.manual_seed(0)
    teacher = ctr_model("mlp", spec_of(site=40, item=60), 8)
    student = ctr_model("fibinet", spec_of(site=40, item=60, device=30), 16)
    untouched = student.embedding.get_table("device")
    reports = project_model_embeddings(teacher, student, seed=4)
    assert list(reports) == ["site", "item", "device", "__numerical__"]
    assert reports["device"].kind == "random_init" and reports["device"].d_in is None
    torch.testing.assert_close(student.embedding.get_table("device"), untouched, rtol=0, atol=0)
    for name in ("site", "item", "__numerical__"):
        source, target = teacher.embedding.get_table(name).double(), student.embedding.get_table(name).double()
        assert reports[name].kind == "expand" and reports[name].rows == len(source)
        torch.testing.assert_close(target @ target.T, source @ source.T, rtol=1e-5, atol=1e-7)
    # One W for every field keeps cross-field inner products too (FM-style interactions).
    site_t, item_t = teacher.embedding.get_table("site"), teacher.embedding.get_table("item")
    site_s, item_s = student.embedding.get_table("site"), student.embedding.get_table("item")
    torch.testing.assert_close(site_s @ item_s.T, site_t @ item_t.T, rtol=1e-5, atol=1e-6)
    categorical = torch.tensor([[1, 2, 3], [39, 59, 29]])
    assert torch.isfinite(student(categorical, torch.ones(2, 2))).all()  # the student still runs


def test_project_model_embeddings_reduces_with_pca() -> None:
    torch.manual_seed(0)
    teacher = ctr_model("dcn", spec_of(site=40), 16)
    student = ctr_model("deepfm", spec_of(site=40), 4)
    reports = project_model_embeddings(teacher, student)
    expected, _ = project_table(teacher.embedding.get_table("site"), 4)
    assert reports["site"].kind == "pca" and 0 < reports["site"].explained_variance_ratio < 1
    torch.testing.assert_close(student.embedding.get_table("site"), expected)


def test_vocabulary_mismatch_raises_and_leaves_the_student_untouched() -> None:
    torch.manual_seed(0)
    teacher = ctr_model("mlp", spec_of(site=40, item=60), 8)
    student = ctr_model("fibinet", spec_of(site=40, item=61), 16)
    before = student.embedding.get_table("site")
    with pytest.raises(ValueError, match="'item': teacher has 60 rows, student 61"):
        project_model_embeddings(teacher, student)
    torch.testing.assert_close(student.embedding.get_table("site"), before, rtol=0, atol=0)
