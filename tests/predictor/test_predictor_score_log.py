"""The kept-score ring: label joins by row id, shadow fills, eviction, complete-prefix flushes, per-arm figures."""

from __future__ import annotations

import numpy as np
import pytest

from services.predictor.arm_metrics import arm_figures, window_figures
from services.predictor.arms import STUDENT, TEACHER
from services.predictor.score_log import ScoreLog


def _append(log: ScoreLog, ids: list[str], served: list[int], scores: list[float], pending: bool = True,
            now: float = 100.0, generations: tuple[int, int] = (1, 2)) -> np.ndarray:
    count = len(ids)
    return log.append(row_ids=np.array(ids, dtype=object), request_id="req", now=now,
                      served=np.array(served, np.int8), bucket=np.arange(count, dtype=np.int32),
                      primary_scores=np.array(scores, np.float32), generations=generations,
                      unknown=np.zeros((count, 2), np.int32), shadow_pending=np.full(count, pending))


def test_labels_join_by_row_id_and_unknown_ids_are_counted() -> None:
    log = ScoreLog(10)
    _append(log, ["a", "b", "c"], [TEACHER, STUDENT, TEACHER], [0.1, 0.2, 0.3])
    assert log.add_labels(["c", "zz", "a"], np.array([1, 0, 0], np.float32)) == (2, 1)
    rows = log.since(0)
    assert rows.label[[0, 2]].tolist() == [0.0, 1.0] and np.isnan(rows.label[1])
    assert rows.score[:, 0].tolist()[::2] == pytest.approx([0.1, 0.3]) and rows.score[1, 1] == pytest.approx(0.2)


def test_shadow_scores_fill_the_other_column_and_flushes_stop_at_pending_rows() -> None:
    log = ScoreLog(10)
    first = _append(log, ["a", "b"], [TEACHER, TEACHER], [0.1, 0.2])
    _append(log, ["c"], [STUDENT], [0.5])
    assert len(log.take_complete()) == 0  # row a still waits for its shadow score
    log.fill_shadow(first, STUDENT, np.array([0.7, 0.8], np.float32), 2, np.array([1, 0], np.int32))
    done = log.take_complete()
    assert done.row_id.tolist() == ["a", "b"] and done.score[:, 1].tolist() == pytest.approx([0.7, 0.8])
    assert done.unknown[:, 1].tolist() == [1, 0]
    log.settle(np.array([2]))
    assert log.take_complete().row_id.tolist() == ["c"] and log.pending_flush == 0


def test_the_ring_evicts_the_oldest_rows_and_counts_unflushed_ones_lost() -> None:
    log = ScoreLog(4)
    _append(log, ["a", "b", "c"], [TEACHER] * 3, [0.1] * 3, pending=False)
    _append(log, ["d", "e", "a"], [TEACHER] * 3, [0.2] * 3, pending=False)  # "a" again: the newer row wins
    assert log.lost_before_flush == 2  # rows a and b were never flushed
    assert log.add_labels(["b", "a", "e"], np.ones(3, np.float32)) == (2, 1)
    assert sorted(log.since(0).row_id.tolist()) == ["a", "c", "d", "e"]
    assert log.take_complete().row_id.tolist() == ["c", "d", "e", "a"]


def test_figures_count_only_the_current_checkpoint_of_each_arm() -> None:
    log = ScoreLog(100)
    rng = np.random.default_rng(0)
    seqs = _append(log, [f"r{i}" for i in range(40)], [TEACHER] * 40, list(rng.random(40)))
    log.fill_shadow(seqs, STUDENT, rng.random(40).astype(np.float32), 2, np.zeros(40, np.int32))
    old = _append(log, [f"o{i}" for i in range(10)], [STUDENT] * 10, [0.5] * 10, generations=(1, 7))
    log.add_labels([f"r{i}" for i in range(40)] + [f"o{i}" for i in range(10)], (rng.random(50) < 0.4).astype(np.float32))
    rows = log.since(0)
    teacher = arm_figures(rows, TEACHER, 1, "t/v000001")
    student = arm_figures(rows, STUDENT, 2, "s/v000001")
    assert (teacher.served_rows, teacher.scored_rows, teacher.labelled_rows) == (40, 40, 40)
    assert (student.served_rows, student.scored_rows) == (0, 40)  # generation 7's rows are another checkpoint
    figures = window_figures(rows, window_start=0, generations={TEACHER: 1, STUDENT: 2},
                             checkpoints={TEACHER: "t/v000001", STUDENT: "s/v000001"}, replicates=50, level=0.95,
                             max_rows=1000, seed=0)
    assert figures.paired.rows == 40 and len(old) == 10


def test_appends_that_wrap_around_the_ring_keep_every_field_of_the_newest_rows() -> None:
    """Requests of many sizes, some straddling the ring's end: the kept rows are exactly the newest `capacity`."""
    rng = np.random.default_rng(0)
    log = ScoreLog(7)
    appended: list[tuple[str, int, float, int]] = []  # row id, served arm, primary score, request number
    for request in range(40):
        count = int(rng.integers(1, 6))
        ids = [f"r{len(appended) + i}" for i in range(count)]
        served = rng.choice([TEACHER, STUDENT], count).tolist()
        scores = rng.random(count).astype(np.float32).tolist()
        log.append(row_ids=np.array(ids, dtype=object), request_id=f"q{request}", now=float(request),
                   served=np.array(served, np.int8), bucket=np.full(count, request, np.int32),
                   primary_scores=np.array(scores, np.float32), generations=(1, 2),
                   unknown=np.full((count, 2), request, np.int32), shadow_pending=np.zeros(count, bool))
        appended += [(i, a, s, request) for i, a, s in zip(ids, served, scores)]
        kept = log.since(0.0)
        expected = appended[-7:]
        assert kept.row_id.tolist() == [e[0] for e in expected]
        assert kept.served.tolist() == [e[1] for e in expected]
        assert kept.request_id.tolist() == [f"q{e[3]}" for e in expected]
        assert kept.bucket.tolist() == kept.scored_at.astype(int).tolist() == [e[3] for e in expected]
        column = (kept.served == STUDENT).astype(int)
        assert kept.score[np.arange(len(kept)), column].tolist() == [e[2] for e in expected]
        assert np.isnan(kept.score[np.arange(len(kept)), 1 - column]).all()
        assert log.add_labels([e[0] for e in appended], np.ones(len(appended), np.float32)) == (
            len(expected), len(appended) - len(expected))
