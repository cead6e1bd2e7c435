"""The exposure log: kept rows with both arms' scores, written as time partitions of a dataset.

Each flush writes one Parquet partition (`datasets/<dataset>/ts=…/data.parquet`, the dataset
store's layout), so any consumer reads the log in time order with `DatasetStore.read`:

    row_id, request_id, scored_at (timestamp, UTC), served_arm ("teacher"/"student"), cohort_bucket,
    teacher_score, student_score (null where that arm did not score the row),
    teacher_checkpoint, student_checkpoint (name/version of the checkpoint that scored it),
    teacher_unknown, student_unknown (values the arm's vocabulary did not know)
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import numpy as np
import pyarrow as pa

from services.common.errors import AlreadyExistsError
from services.common.storage import DatasetStore
from services.predictor.arms import ARM_NAMES
from services.predictor.score_log import KeptRows

_PARTITION_TRIES = 600


def exposure_table(rows: KeptRows, checkpoint_of_generation: dict[int, str]) -> pa.Table:
    """The rows as an Arrow table (columns in the module docstring)."""
    names = np.array(["", *ARM_NAMES.values()], dtype=object)
    refs = np.array([checkpoint_of_generation.get(g) for g in range(max(checkpoint_of_generation, default=0) + 1)],
                    dtype=object)
    columns = {
        "row_id": pa.array(rows.row_id, pa.string()),
        "request_id": pa.array(rows.request_id, pa.string()),
        "scored_at": pa.array((rows.scored_at * 1e6).astype(np.int64), pa.timestamp("us", tz="UTC")),
        "served_arm": pa.array(names[rows.served], pa.string()),
        "cohort_bucket": pa.array(rows.bucket),
    }
    for column, arm in enumerate(ARM_NAMES.values()):
        scored = np.isfinite(rows.score[:, column])
        columns[f"{arm}_score"] = pa.array(rows.score[:, column], mask=~scored)
        columns[f"{arm}_checkpoint"] = pa.array(np.where(scored, refs[rows.generation[:, column]], None), pa.string())
        columns[f"{arm}_unknown"] = pa.array(rows.unknown[:, column], mask=~scored)
    return pa.table(columns)


def write_exposures(datasets: DatasetStore, dataset: str, table: pa.Table, first_scored_at: float) -> str:
    """Write one partition starting at the first row's second (the next free second if taken); its id."""
    start = datetime.fromtimestamp(int(first_scored_at), tz=timezone.utc)
    for attempt in range(_PARTITION_TRIES):
        try:
            return datasets.write_partition(dataset, start + timedelta(seconds=attempt), table)
        except AlreadyExistsError:
            continue
    raise AlreadyExistsError(f"no free partition within {_PARTITION_TRIES} s of {start}", field="dataset")
