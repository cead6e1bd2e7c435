"""The engine in process: a request's rows are kept after its answer (at the loop's next turn), never lost.

`PredictorEngine.score` answers before the rows enter the score log; labels, figures, flushes and shutdown
record what is still deferred first, so a label sent right after the answer joins its row and a shutdown
writes every answered row with both arms' scores.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pyarrow as pa
from predictor_world import random_rows

from services.common.storage import DatasetStore, LocalObjectStore
from services.predictor.arms import ArmLoader
from services.predictor.engine import PredictorEngine
from services.predictor.features import v1_columns
from services.predictor.settings import PredictorSettings


def _engine(store_dir: Path, checkpoints, dataset: str) -> PredictorEngine:  # noqa: ANN001 - CheckpointStore
    settings = PredictorSettings(teacher="ctr/teacher/v000001", student="ctr/student/v000001", student_weight=0.5,
                                 shadow_share=1.0, flush_interval_s=3600, metrics_refresh_s=3600,
                                 exposure_dataset=dataset, max_batch_rows=64, inline_rows=16)
    return PredictorEngine(settings, ArmLoader(checkpoints, trace=False), DatasetStore(LocalObjectStore(store_dir)))


def _columns(engine: PredictorEngine, rows: dict[str, list]):  # noqa: ANN202 - RequestColumns
    return v1_columns({"instances": [dict(zip(rows, values)) for values in zip(*rows.values())]}, engine.schema)


def test_rows_are_kept_after_the_answer_and_before_any_reader(store_dir: Path, checkpoints) -> None:  # noqa: ANN001
    engine = _engine(store_dir, checkpoints, "exposures/deferred-a")

    async def scenario() -> None:
        engine.start_background()
        rows = random_rows(np.random.default_rng(7), 5)
        rows["row_id"] = [f"d-{i}" for i in range(5)]
        scored = await engine.score(_columns(engine, rows), "req-1")
        assert engine.score_log.head == 0  # answered, not yet kept: that happens off the response's path
        assert engine.add_labels(["d-0", "d-4"], [1.0, 0.0]) == (2, 0)  # a reader records first
        assert engine.score_log.head == 5
        second = await engine.score(_columns(engine, rows), "req-2")  # same ids: the newer rows get the labels
        await asyncio.sleep(0)  # the loop's next turn records the answer
        assert engine.score_log.head == 10
        kept = engine.score_log.since(0)
        assert list(kept.request_id) == ["req-1"] * 5 + ["req-2"] * 5
        assert np.allclose(kept.score[np.arange(10), kept.served - 1],
                           np.concatenate([scored.probabilities, second.probabilities]))
        assert np.all(kept.scored_at <= second.scored_at) and kept.scored_at[0] == scored.scored_at
        await engine.close(timeout=30)

    asyncio.run(scenario())
    assert engine.score_log.flushed == 10  # every row written, both arms' scores included
    table = pa.Table.from_batches([b for b, _ in engine.datasets.read(engine.exposure_dataset)])
    assert table.num_rows == 10
    assert not np.isnan(np.array(table["teacher_score"])).any()
    assert not np.isnan(np.array(table["student_score"])).any()


def test_shutdown_keeps_and_writes_answers_still_deferred(store_dir: Path, checkpoints) -> None:  # noqa: ANN001
    engine = _engine(store_dir, checkpoints, "exposures/deferred-b")

    async def scenario() -> None:
        engine.start_background()
        rng = np.random.default_rng(8)
        for index in range(3):  # no await in between that yields: all three answers are still deferred
            await engine.score(_columns(engine, random_rows(rng, 4)), f"req-{index}")
        assert engine.score_log.head == 0
        await engine.close(timeout=30)

    asyncio.run(scenario())
    assert engine.score_log.head == engine.score_log.flushed == 12
    table = pa.Table.from_batches([b for b, _ in engine.datasets.read(engine.exposure_dataset)])
    assert sorted(set(table["request_id"].to_pylist())) == ["req-0", "req-1", "req-2"]
    assert not np.isnan(np.array(table["teacher_score"])).any()
    assert not np.isnan(np.array(table["student_score"])).any()


def test_a_shadow_batch_is_scored_in_chunks_and_requests_go_first_between_them(store_dir: Path,
                                                                              checkpoints) -> None:  # noqa: ANN001
    settings = PredictorSettings(teacher="ctr/teacher/v000001", student="ctr/student/v000001", student_weight=0.5,
                                 shadow_share=1.0, flush_interval_s=3600, metrics_refresh_s=3600, max_batch_rows=64,
                                 shadow_batch_rows=12, shadow_chunk_jobs=4, shadow_max_delay_s=30,
                                 exposure_dataset="exposures/chunks")
    engine = PredictorEngine(settings, ArmLoader(checkpoints, trace=False), DatasetStore(LocalObjectStore(store_dir)))
    chunks: list[int | str] = []  # shadow rows scored per chunk; "answered" when the request in between was
    rng = np.random.default_rng(3)
    kept = engine.shadow.on_scored  # called for each arm's scores of a chunk, as they are kept

    async def request_in_between() -> None:
        await engine.score(_columns(engine, random_rows(rng, 1)), "between")
        chunks.append("answered")

    def scored(result) -> None:  # noqa: ANN001 - ShadowScores
        kept(result)
        if not chunks:  # a request arrives while the batch's first chunk is scored
            asyncio.get_running_loop().create_task(request_in_between())
            chunks.append(0)
        if isinstance(chunks[-1], int):
            chunks[-1] += len(result.seqs)
        else:
            chunks.append(len(result.seqs))

    engine.shadow.on_scored = scored

    async def scenario() -> None:
        engine.start_background()
        for index in range(12):  # 12 one-row requests: the batch of 12 shadow rows is then due
            await engine.score(_columns(engine, random_rows(rng, 1)), f"c-{index}")
        while "answered" not in chunks:
            await asyncio.sleep(0.01)
        assert await engine.shadow.drain(30)
        await engine.close(timeout=30)

    asyncio.run(scenario())
    answered = chunks.index("answered")
    assert chunks[:answered] == [4]  # answered right after the first chunk (4 rows), before the other two
    assert sum(chunks[answered + 1:]) == 9  # the other 8 rows of the batch, and the request's own shadow row
