"""Dimension-adaptive embedding projection (paper §3.1.1, Theorem 1): teacher table [V, d_T] → student [V, d_S].

Symbols: V rows (vocabulary), d_in = d_T teacher width, d_out = d_S student width, W [d_in, d_out], E_S = E_T·W.

* d_out == d_in: copy (W = I).
* d_out >  d_in: W = Q[:, :d_in]ᵀ, Q the QR factor of a seeded Gaussian [d_out, d_out] with Q's columns signed by
  sign(diag R), which makes Q a Haar draw and deterministic; W Wᵀ = I keeps every inner product.
* d_out <  d_in: exact PCA. C = Ēᵀ Ē / V of the centred table in float64 (from streamed sums), ``eigh``, eigenvalues
  descending, each eigenvector signed so its largest-|component| is positive; W = U[:, :d_out].

The mean. Eq. 4 writes E_S = Ē_T·W + 1μᵀ, which adds the d_T-wide mean to a d_S-wide matrix and cannot be meant. We
follow Algorithm 1 (line 8): E_S = E_T·W = Ē_T·W + 1(μᵀW). The basis is fitted on the centred table, so the Gram error
of the centred table is Theorem 1's V²·Σ_{k>d_S} λ_k², and the mean is kept (projected by the same W) rather than
dropped, so one map E_T ↦ E_T·W serves every row with no per-table offset to store.

Streaming: statistics (count, Σx, Σxxᵀ in float64) and the matmul both run over row chunks, into a preallocated output
(which may be an ``np.memmap``), so tables larger than memory work. ``ProjectionStats`` and ``Projection`` are pure
values with JSON-safe ``to_dict``/``from_dict``: the projector service maps ``from_chunk`` over shards, reduces with
``merge``, fits once and maps ``apply``.

Example::

    projected, report = project_table(teacher_table, 16)   # [V, 32] float32 → [V, 16] float32, report.kind == "pca"
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch

    from crossadapt.models import CTRModel

ProjectionKind = Literal["copy", "expand", "pca"]
DEFAULT_CHUNK_ROWS = 65_536
_ORTHONORMAL_TOL = 1e-6


class ProjectionReport(BaseModel):
    """What happened to one table; the distortion figures are exact, from the spectrum (Theorem 1)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["copy", "expand", "pca", "random_init"]
    d_in: int | None  # None: the teacher has no such table (kind "random_init")
    d_out: int
    rows: int | None  # None: not counted (copy/expand fitted without stats)
    explained_variance_ratio: float | None  # Σ_{k≤d_out} λ_k / Σ λ_k; 1.0 for copy/expand
    eigenvalues: list[float] | None  # λ_1 ≥ … ≥ λ_{d_in} of the centred covariance, when stats were given
    gram_distortion: float | None  # ‖G_T − G_S‖_F² on the centred table = V²·Σ_{k>d_out} λ_k²
    relative_distortion: float | None  # gram_distortion / ‖G_T‖_F² = Σ_{k>d_out} λ_k² / Σ λ_k²
    seed: int | None = None
    note: str = ""


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _row_ranges(rows: int, chunk_rows: int) -> Iterator[tuple[int, int]]:
    for start in range(0, rows, chunk_rows):
        yield start, min(start + chunk_rows, rows)


def _is_tensor(value: Any) -> bool:
    """Whether `value` is a torch tensor, without importing torch: the projector's tables are numpy, and a
    process that never imported torch (a gRPC server planning a projection) holds no tensor."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def _as_matrix(array: Any, name: str) -> np.ndarray:
    """A 2-D real numpy array (a view when possible: memmaps and CPU tensors are not copied)."""
    if _is_tensor(array):
        import torch

        tensor = array.detach()
        if tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.to(torch.float32)
        array = tensor.cpu().numpy()
    array = np.asarray(array)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, width], got shape {array.shape}")
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
    return array


def _output_dtype(dtype: Any, out: np.ndarray | None) -> np.dtype:
    resolved = np.dtype(dtype if out is None else out.dtype)
    if resolved not in (np.float32, np.float64):
        raise ValueError(f"output dtype must be float32 or float64, got {resolved}")
    return resolved


def _non_finite_error(chunk: np.ndarray, first_row: int, what: str) -> ValueError:
    bad = np.argwhere(~np.isfinite(chunk))
    if len(bad) == 0:
        return ValueError(f"{what}: squares of values in rows {first_row}..{first_row + len(chunk) - 1} overflow float64")
    row, column = bad[0]
    return ValueError(f"{what}: non-finite value {chunk[row, column]!r} at row {first_row + row}, column {column}")


class ProjectionStats:
    """Mergeable sufficient statistics of table rows, float64: count, Σx [d], Σxxᵀ [d, d].

    ``stats.sum`` is the vector Σx; ``ProjectionStats.sum(parts)`` (on the class) merges many stats. The instance
    attribute shadows the class method, which is a non-data descriptor.
    """

    def __init__(self, count: int, sum: Any, outer: Any) -> None:  # noqa: A002 - the contract's field name
        vector, matrix = np.asarray(sum, dtype=np.float64), np.asarray(outer, dtype=np.float64)
        if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
            raise ValueError(f"stats count must be a non-negative integer, got {count!r}")
        if vector.ndim != 1 or matrix.shape != (len(vector), len(vector)):
            raise ValueError(f"stats sum must be [d] and outer [d, d], got {vector.shape} and {matrix.shape}")
        self.count, self.sum, self.outer = int(count), vector, matrix

    @property
    def dim(self) -> int:
        return len(self.sum)

    @classmethod
    def from_chunk(cls, chunk: Any, *, first_row: int = 0, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> ProjectionStats:
        """Stats of rows ``chunk`` [n, d] (numpy, memmap or tensor), streamed in float64 sub-chunks of ``chunk_rows``.

        ``first_row`` is the chunk's offset in the whole table, used only in error messages.
        """
        rows, chunk_rows = _as_matrix(chunk, "chunk"), _check_positive_int(chunk_rows, "chunk_rows")
        n, d = rows.shape
        total, outer = np.zeros(d), np.zeros((d, d))
        buffer = np.empty((min(chunk_rows, n), d), dtype=np.float64)
        for start, stop in _row_ranges(n, chunk_rows):
            part = buffer[: stop - start]
            np.copyto(part, rows[start:stop], casting="same_kind")
            total += part.sum(axis=0)
            outer += part.T @ part
            if not (np.isfinite(total).all() and np.isfinite(outer).all()):
                raise _non_finite_error(rows[start:stop], first_row + start, "table")
        return cls(n, total, outer)

    def merge(self, other: ProjectionStats) -> ProjectionStats:
        if other.dim != self.dim:
            raise ValueError(f"cannot merge stats of width {self.dim} with stats of width {other.dim}")
        return ProjectionStats(self.count + other.count, self.sum + other.sum, self.outer + other.outer)

    @classmethod
    def sum(cls, parts: Iterable[ProjectionStats]) -> ProjectionStats:  # type: ignore[no-redef]
        iterator = iter(parts)
        first = next(iterator, None)
        if first is None:
            raise ValueError("no stats to sum: the iterable is empty")
        return functools.reduce(ProjectionStats.merge, iterator, first)

    def covariance(self) -> np.ndarray:
        """C = Σxxᵀ/V − μμᵀ [d, d] (population covariance, as in Theorem 1), symmetrised."""
        if self.count == 0:
            raise ValueError("empty stats: no rows were accumulated")
        mean = self.sum / self.count
        # Raw moments cancel when |μ|² ≫ λ; float64 leaves ~1e-16·|μ|²/λ relative error, negligible for embeddings.
        cov = self.outer / self.count - np.outer(mean, mean)
        return (cov + cov.T) / 2

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "sum": self.sum.tolist(), "outer": self.outer.tolist()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProjectionStats:
        missing = {"count", "sum", "outer"} - set(data)
        if missing:
            raise ValueError(f"stats dict lacks {sorted(missing)}")
        return cls(data["count"], data["sum"], data["outer"])

    def __repr__(self) -> str:
        return f"ProjectionStats(count={self.count}, dim={self.dim})"


def _orthogonal_expansion(d_in: int, d_out: int, seed: int) -> np.ndarray:
    """W [d_in, d_out] = first d_in columns of a Haar-random orthogonal [d_out, d_out], transposed."""
    gaussian = np.random.default_rng(seed).standard_normal((d_out, d_out))
    q, r = np.linalg.qr(gaussian)
    q *= np.where(np.diag(r) < 0, -1.0, 1.0)  # sign fix: unique Q, Haar-distributed (Mezzadri 2007)
    return np.ascontiguousarray(q[:, :d_in].T)


def _spectrum(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues descending (clipped at 0) and eigenvectors [d, d] with largest-|component| positive."""
    values, vectors = np.linalg.eigh(cov)
    values, vectors = np.clip(values[::-1], 0.0, None), vectors[:, ::-1]
    pivot = np.argmax(np.abs(vectors), axis=0)
    vectors = vectors * np.where(vectors[pivot, np.arange(vectors.shape[1])] < 0, -1.0, 1.0)
    return values, np.ascontiguousarray(vectors)


def _report(kind: ProjectionKind, d_in: int, d_out: int, stats: ProjectionStats | None, eigenvalues: np.ndarray | None,
            seed: int) -> ProjectionReport:
    explained, distortion, relative = 1.0, 0.0, 0.0  # copy and expansion keep everything (Theorem 1 i, ii)
    if kind == "pca":
        assert stats is not None and eigenvalues is not None
        total, total_sq, tail_sq = eigenvalues.sum(), (eigenvalues**2).sum(), (eigenvalues[d_out:] ** 2).sum()
        explained = float(eigenvalues[:d_out].sum() / total) if total > 0 else 1.0
        distortion = float(stats.count**2 * tail_sq)
        relative = float(tail_sq / total_sq) if total_sq > 0 else 0.0
    return ProjectionReport(
        kind=kind, d_in=d_in, d_out=d_out, rows=None if stats is None else stats.count,
        explained_variance_ratio=explained, eigenvalues=None if eigenvalues is None else eigenvalues.tolist(),
        gram_distortion=distortion, relative_distortion=relative, seed=seed if kind == "expand" else None,
    )


@dataclass(frozen=True)
class Projection:
    """A fitted map E ↦ E·W; ``weight`` is float64 [d_in, d_out] (orthonormal rows or columns)."""

    kind: ProjectionKind
    weight: np.ndarray
    report: ProjectionReport

    def __post_init__(self) -> None:
        w = self.weight
        if not isinstance(w, np.ndarray) or w.ndim != 2 or w.dtype != np.float64 or not np.isfinite(w).all():
            raise ValueError("projection weight must be a finite float64 [d_in, d_out] array")
        d_in, d_out = w.shape
        expected = "copy" if d_in == d_out else "expand" if d_out > d_in else "pca"
        if self.kind != expected:
            raise ValueError(f"kind {self.kind!r} does not fit a [{d_in}, {d_out}] weight (expected {expected!r})")
        gram = w @ w.T if self.kind == "expand" else w.T @ w
        if not np.allclose(gram, np.eye(len(gram)), atol=_ORTHONORMAL_TOL, rtol=0):
            raise ValueError(f"{self.kind} weight [{d_in}, {d_out}] is not orthonormal")

    @property
    def d_in(self) -> int:
        return self.weight.shape[0]

    @property
    def d_out(self) -> int:
        return self.weight.shape[1]

    def apply(self, chunk: Any, *, out: np.ndarray | None = None, dtype: Any = np.float32,
              first_row: int = 0) -> np.ndarray:
        """chunk [n, d_in] → chunk @ W [n, d_out], computed in ``dtype`` (float32 default) or ``out.dtype``."""
        rows = _as_matrix(chunk, "chunk")
        if rows.shape[1] != self.d_in:
            raise ValueError(f"chunk has width {rows.shape[1]}, this projection expects {self.d_in}")
        if not np.isfinite(rows).all():
            raise _non_finite_error(rows, first_row, "table")
        out_dtype = _output_dtype(dtype, out)
        if out is None:
            out = np.empty((len(rows), self.d_out), dtype=out_dtype)
        elif out.shape != (len(rows), self.d_out):
            raise ValueError(f"out has shape {out.shape}, expected {(len(rows), self.d_out)}")
        rows = rows.astype(out_dtype, copy=False)
        if self.kind == "copy":
            out[...] = rows  # exact, no identity matmul
        else:
            np.matmul(rows, self.weight.astype(out_dtype, copy=False), out=out)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "weight": self.weight.tolist(), "report": self.report.model_dump(mode="json")}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Projection:
        missing = {"kind", "weight", "report"} - set(data)
        if missing:
            raise ValueError(f"projection dict lacks {sorted(missing)}")
        weight = np.asarray(data["weight"], dtype=np.float64)
        return cls(data["kind"], weight, ProjectionReport.model_validate(data["report"]))


def fit_projection(stats: ProjectionStats | None, d_in: int, width: int, seed: int = 0) -> Projection:
    """Fit W [d_in, width]; copy and expansion ignore the data (stats only enrich the report), PCA needs stats."""
    d_in, width = _check_positive_int(d_in, "d_in"), _check_positive_int(width, "width")
    eigenvalues = vectors = None
    if stats is not None:
        if stats.dim != d_in:
            raise ValueError(f"stats have width {stats.dim} but d_in is {d_in}")
        if stats.count == 0:
            raise ValueError("empty stats: no rows were accumulated")
        if not (np.isfinite(stats.sum).all() and np.isfinite(stats.outer).all()):
            raise ValueError("stats contain NaN or infinite values")
        eigenvalues, vectors = _spectrum(stats.covariance())
    if width == d_in:
        kind: ProjectionKind = "copy"
        weight = np.eye(d_in)
    elif width > d_in:
        kind, weight = "expand", _orthogonal_expansion(d_in, width, seed)
    else:
        if vectors is None:
            raise ValueError(f"PCA from width {d_in} to {width} needs the table's stats, got None")
        kind, weight = "pca", np.ascontiguousarray(vectors[:, :width])
    return Projection(kind, weight, _report(kind, d_in, width, stats, eigenvalues, seed))


def table_projection(table: Any, width: int, seed: int = 0, *,
                     chunk_rows: int = DEFAULT_CHUNK_ROWS) -> Projection:
    """The projection :func:`project_table` applies to ``table`` [V, d_in]: PCA to ``width`` when narrowing
    (fitted on every row), else the seeded orthogonal expansion. Rows appended to a grown vocabulary are
    projected with the one fitted on the table they join."""
    rows = _as_matrix(table, "table")
    stats = ProjectionStats.from_chunk(rows, chunk_rows=chunk_rows) if width < rows.shape[1] else None
    return fit_projection(stats, rows.shape[1], width, seed)


def project_table(table: Any, width: int, seed: int = 0, *, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                  dtype: Any = np.float32, out: np.ndarray | None = None) -> tuple[Any, ProjectionReport]:
    """Project one table [V, d_in] (numpy, memmap or tensor) to [V, width]; returns the same kind, in ``dtype``.

    PCA reads the table twice (stats, then apply). ``out`` (e.g. an ``np.memmap`` [V, width], float32 or float64)
    receives the result and sets the dtype. Memory beyond the output: one [chunk_rows, d_in] buffer.
    """
    rows = _as_matrix(table, "table")
    n, d_in = rows.shape
    width, out_dtype = _check_positive_int(width, "width"), _output_dtype(dtype, out)
    chunk_rows = _check_positive_int(chunk_rows, "chunk_rows")
    projection = table_projection(rows, width, seed, chunk_rows=chunk_rows)
    if out is None:
        out = np.empty((n, width), dtype=out_dtype)
    elif out.shape != (n, width):
        raise ValueError(f"out has shape {out.shape}, expected {(n, width)}")
    buffer = np.empty((min(chunk_rows, n), d_in), dtype=out_dtype) if rows.dtype != out_dtype else None
    for start, stop in _row_ranges(n, chunk_rows):
        chunk = rows[start:stop]
        if buffer is not None:  # cast into one reused buffer, never a whole-table copy
            chunk = buffer[: stop - start]
            np.copyto(chunk, rows[start:stop], casting="unsafe")
        projection.apply(chunk, out=out[start:stop], first_row=start)
    report = projection.report.model_copy(update={"rows": n})
    if _is_tensor(table):
        import torch

        return torch.from_numpy(out).to(table.device), report
    return out, report


def project_model_embeddings(teacher: CTRModel, student: CTRModel, seed: int = 0,
                             chunk_rows: int = DEFAULT_CHUNK_ROWS) -> dict[str, ProjectionReport]:
    """Set each student table to its projected teacher table; returns a report per student table.

    One seed for all tables: expanding every field with the same W also keeps cross-field inner products (FM-style
    interactions). Fields the teacher lacks keep their random init. All tables are checked and projected before any
    is set, so an error leaves the student untouched.
    """
    teacher_names = set(teacher.embedding.table_names())
    reports: dict[str, ProjectionReport] = {}
    plan: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for name in student.embedding.table_names():
        target = student.embedding.get_table(name)
        if name not in teacher_names:
            reports[name] = ProjectionReport(
                kind="random_init", d_in=None, d_out=target.shape[1], rows=target.shape[0],
                explained_variance_ratio=None, eigenvalues=None, gram_distortion=None, relative_distortion=None,
                note="the teacher has no such table; the student keeps its random init")
            continue
        source = teacher.embedding.get_table(name)
        if source.shape[0] != target.shape[0]:
            raise ValueError(f"table {name!r}: teacher has {source.shape[0]} rows, student {target.shape[0]}; "
                             "the student must inherit the teacher's vocabulary")
        plan.append((name, source, target))
    projected_tables = {}
    for name, source, target in plan:
        projected, reports[name] = project_table(source, target.shape[1], seed, chunk_rows=chunk_rows)
        projected_tables[name] = projected.to(dtype=target.dtype, device=target.device)
    for name, projected in projected_tables.items():
        student.embedding.set_table(name, projected)
    return {name: reports[name] for name in student.embedding.table_names()}
