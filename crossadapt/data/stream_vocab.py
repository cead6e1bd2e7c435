"""Streaming preparation, between the passes: the vocabulary from the spilled runs, and each run's ids.

Field by field (two at a time) the runs' dictionaries are merged (:func:`crossadapt.data.spill.merge_field`),
their values counted over the rows that count (hist + train when preparing, the whole partition when
growing), the ids chosen (threshold and order as :func:`crossadapt.data.vocabulary.build_field`, or a reused
or grown vocabulary's), and every run's ids written to its ``ids.bin`` for the encode pass.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from crossadapt.data.growth import GrowthConfig, Pending, field_growth
from crossadapt.data.schema import PrepareConfig
from crossadapt.data.spill import SpilledRows, merge_field
from crossadapt.data.vocabulary import Vocabulary, build_field_from_counts


@dataclass
class VocabularyPlan:
    """The vocabulary to write (each run's ids are in its ``ids.bin``, see :class:`RunIds`)."""

    vocabulary: Vocabulary
    reused: list[str] = field(default_factory=list)
    added: dict[str, int] = field(default_factory=dict)
    pending: Pending | None = None


class RunIds:
    """Per run, the vocabulary id of each of its distinct values, field after field, in ``ids.bin``
    (``[sum_f U_f]`` int32): written field by field once the vocabulary is known, read per block."""

    def __init__(self, spilled: SpilledRows):
        self.spilled = spilled
        self.offsets = [np.concatenate([[0], np.cumsum(run.dictionary_sizes)]).astype(np.int64) for run in spilled.runs]
        self._loaded: dict[int, np.ndarray] = {}

    def path(self, run: int) -> Path:
        return self.spilled.run_folders[run] / "ids.bin"

    def write(self, run: int, index: int, ids: np.ndarray) -> None:
        fd = os.open(self.path(run), os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, np.ascontiguousarray(ids, dtype=np.int32).tobytes(), int(self.offsets[run][index]) * 4)
        finally:
            os.close(fd)

    def load(self, runs: list[int]) -> None:
        """Keep exactly these runs' ids in memory (those of the block being assembled)."""
        self._loaded = {run: self._loaded.get(run) if run in self._loaded else np.fromfile(self.path(run), dtype=np.int32)
                        for run in runs}  # fmt: skip

    def field(self, run: int, index: int) -> np.ndarray:
        """``[U]`` ids of run ``run``'s values of field ``index`` (``load`` the run first)."""
        start, stop = self.offsets[run][index], self.offsets[run][index + 1]
        return self._loaded[run][start:stop]


def count_values(spilled: SpilledRows, index: int, prefix: np.ndarray, run_maps: list[np.ndarray], size: int) -> np.ndarray:
    """``[size]`` occurrences of each merged value of field ``index`` in the first ``prefix[j]`` rows of run j."""
    counts = np.zeros(size, dtype=np.int64)
    for run, rows in enumerate(prefix.tolist()):
        if rows:
            local = np.bincount(spilled.read(run, "categorical", 0, rows, index), minlength=len(run_maps[run]))
            np.add.at(counts, run_maps[run], local)  # a run may hold "<MISSING>" twice (null and text)
    return counts


def assign_ids(spilled: SpilledRows, prefix: np.ndarray, run_ids: RunIds, decide) -> list:
    """For every categorical field (two at a time): merge the runs' values, count them over ``prefix``,
    let ``decide(index, values, counts) -> (ids [R], result)`` choose their ids, and write each run's ids."""

    def one(index: int):
        values, run_maps = merge_field(spilled, index)
        counts = count_values(spilled, index, prefix, run_maps, len(values))
        ids, result = decide(index, values, counts)
        for run, positions in enumerate(run_maps):
            run_ids.write(run, index, ids[positions])
        return result

    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(one, range(len(spilled.schema.categorical))))


def build_vocabulary(spilled: SpilledRows, config: PrepareConfig, reuse: Vocabulary | None, prefix: np.ndarray,
                     run_ids: RunIds) -> VocabularyPlan:  # fmt: skip
    """As :func:`crossadapt.data.encode.encode_rows`: reused fields keep ``reuse``'s ids; the others
    count the hist + train rows (``prefix``) and keep values seen ``min_count`` times."""
    fields = spilled.schema.categorical
    reused = [f for f in fields if reuse is not None and f in reuse]

    def decide(index: int, values: pa.Array, counts: np.ndarray):
        name = fields[index]
        if name in reused:
            return reuse.id_map(name, values), (reuse.values(name), reuse.counts(name))
        kept, kept_counts, ids = build_field_from_counts(values, counts, config.min_count_for(name))
        return ids, (kept, kept_counts)

    kept = dict(zip(fields, assign_ids(spilled, prefix, run_ids, decide)))
    if reuse is not None and reuse.fields == list(fields):
        vocabulary = reuse  # every field reused: the same vocabulary, version and history included
    else:
        vocabulary = Vocabulary({f: v for f, (v, _) in kept.items()}, {f: c for f, (_, c) in kept.items()}, check=False)
    return VocabularyPlan(vocabulary, reused)


def growth_plan(spilled: SpilledRows, vocabulary: Vocabulary, growth: GrowthConfig | None, pending: Pending,
                run_ids: RunIds) -> VocabularyPlan:  # fmt: skip
    """Ids for an appended partition: known values keep theirs; with ``growth``, new values that reach
    their threshold (counting pending sightings) are appended to the vocabulary (a new version)."""
    fields = spilled.schema.categorical
    growing = growth.growing_fields(fields) if growth is not None else []
    everything = np.array([r.rows for r in spilled.runs], dtype=np.int64)

    def decide(index: int, values: pa.Array, counts: np.ndarray):
        name = fields[index]
        ids = vocabulary.id_map(name, values)
        if name not in growing:
            return ids, None
        admitted, admitted_counts, left = field_growth(vocabulary, name, values, counts, pending, growth)
        if len(admitted):
            position = pc.fill_null(pc.index_in(values, value_set=admitted), -1).to_numpy(zero_copy_only=False)
            new = position >= 0
            ids[new] = vocabulary.size(name) + position[new]
        return ids, (admitted, admitted_counts, left)

    results = dict(zip(fields, assign_ids(spilled, everything, run_ids, decide)))
    additions = {f: (r[0], r[1]) for f, r in results.items() if r is not None and len(r[0])}
    new_pending = dict(pending) | {f: r[2] for f, r in results.items() if r is not None}
    grown = vocabulary.grow(additions) if additions else vocabulary
    return VocabularyPlan(grown, added={f: len(v) for f, (v, _) in additions.items()},
                          pending=new_pending if growth is not None else None)  # fmt: skip
