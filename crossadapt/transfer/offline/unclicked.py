"""Unclicked-sample augmentation for pCVR distillation (paper Sec. 3.1.3, Eq. 9).

The clicked sample D'_train (conversion labels are defined only where a click happened) is augmented
with unclicked rows whose labels are the teacher's pCVR (soft labels), so the student sees the whole
impression space the deployed pCVR model is applied to:

    D''_train = D'_train ∪ {(x_i, f_T^CVR(x_i)) | x_i ∈ Ψ(D_unclick, r_unclick · |D'_train|)}

where Ψ(D, m) draws m rows of D; here round(r_unclick · |D'_train|) rows, half up.

`augment_unclicked` picks the unclicked rows (uniform, without replacement, seeded);
`assemble_pcvr_sample` attaches the hard and soft labels. `StrategicSampler.augment_unclicked` calls the
first with the sampler's config. Also home of the label helpers the sampler shares.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from crossadapt.data import SplitArrays

log = logging.getLogger(__name__)


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


def _binary_labels(label: np.ndarray, name: str = "label", rows: np.ndarray | None = None) -> np.ndarray:
    """label [n] -> bool [n] (True = positive); anything but 0/1 is an error naming the first bad row
    (`rows` [n]: the original row id of each entry, when `label` is a gathered subset)."""
    label = np.asarray(label)
    if label.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {label.shape}")
    positive = label == 1
    bad = ~(positive | (label == 0))
    if bad.any():
        at = int(np.argmax(bad))
        row = at if rows is None else int(rows[at])
        raise ValueError(
            f"{name}[{row}] = {label[at].item()!r}: labels must be 0 or 1 "
            f"({int(bad.sum())} bad values in {len(label)} rows)"
        )
    return positive


class PcvrSample(BaseModel):
    """D''_train for pCVR: indices [m] int64 row ids, labels [m] float32 (hard 0/1 conversions for the
    clicked sample, the teacher's pCVR in [0, 1] for unclicked rows), pseudo [m] bool (True = soft label).
    Clicked rows come first, then unclicked rows; the trainer shuffles."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    indices: np.ndarray
    labels: np.ndarray
    pseudo: np.ndarray


def augment_unclicked(
    clicked_indices: np.ndarray,
    label_click: np.ndarray,
    r_unclick: float,
    seed: int | np.random.Generator = 0,
) -> np.ndarray:
    """Eq. 9's row choice: round(r_unclick * |D'_train|) unclicked rows, uniform without replacement.

    clicked_indices [m] row ids of the clicked sample D'_train (duplicates count: they are sample rows);
    label_click [n] 0/1 click labels of all rows. Returns sorted int64 row ids with label_click == 0.
    If fewer unclicked rows exist than asked for, all are taken and a warning is logged.
    """
    if not (r_unclick >= 0.0 and math.isfinite(r_unclick)):
        raise ValueError(f"r_unclick must be a finite number >= 0, got {r_unclick}")
    clicked = _binary_labels(label_click, "label_click")
    clicked_indices = np.asarray(clicked_indices, dtype=np.int64)
    if clicked_indices.size:
        if clicked_indices.min() < 0 or clicked_indices.max() >= len(clicked):
            raise ValueError(f"clicked_indices must be row ids in [0, {len(clicked)})")
        not_clicked = ~clicked[clicked_indices]
        if not_clicked.any():
            at = int(np.argmax(not_clicked))
            raise ValueError(
                f"clicked_indices[{at}] = row {clicked_indices[at]} has label_click 0: the sample to augment "
                "must contain clicked rows only"
            )
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    pool = np.flatnonzero(~clicked)
    wanted = _round_half_up(r_unclick * len(clicked_indices))
    if wanted > len(pool):
        log.warning("asked for %d unclicked rows but only %d exist: taking all of them", wanted, len(pool))
        return pool.astype(np.int64)
    return np.sort(rng.choice(pool, wanted, replace=False, shuffle=False)).astype(np.int64)


def assemble_pcvr_sample(
    clicked_indices: np.ndarray,
    conversion: np.ndarray,
    unclicked_indices: np.ndarray,
    teacher_pcvr: np.ndarray,
) -> PcvrSample:
    """D''_train = D'_train ∪ {(x_i, f_T^CVR(x_i))} (Eq. 9).

    conversion [n] 0/1 labels of all rows (read only at `clicked_indices`); teacher_pcvr
    [len(unclicked_indices)] the teacher's pCVR for the unclicked rows, in the same order.
    """
    clicked_indices = np.asarray(clicked_indices, dtype=np.int64)
    unclicked_indices = np.asarray(unclicked_indices, dtype=np.int64)
    conversion = np.asarray(conversion)
    for name, ids in (("clicked_indices", clicked_indices), ("unclicked_indices", unclicked_indices)):
        if ids.size and (ids.min() < 0 or ids.max() >= len(conversion)):
            raise ValueError(f"{name} must be row ids in [0, {len(conversion)})")
    hard = _binary_labels(conversion[clicked_indices], "conversion[clicked_indices]")
    pcvr = np.asarray(teacher_pcvr)
    if pcvr.ndim != 1 or len(pcvr) != len(unclicked_indices):
        raise ValueError(
            f"teacher_pcvr has shape {pcvr.shape}; expected ({len(unclicked_indices)},), one per unclicked row"
        )
    bad = ~(np.isfinite(pcvr) & (pcvr >= 0.0) & (pcvr <= 1.0))
    if bad.any():
        at = int(np.argmax(bad))
        raise ValueError(
            f"teacher_pcvr[{at}] = {pcvr[at].item()!r} (row {unclicked_indices[at]}): predictions must be finite "
            f"probabilities in [0, 1] ({int(bad.sum())} bad values)"
        )
    return PcvrSample(
        indices=np.concatenate([clicked_indices, unclicked_indices]),
        labels=np.concatenate([hard.astype(np.float32), pcvr.astype(np.float32)]),
        pseudo=np.concatenate([np.zeros(len(clicked_indices), bool), np.ones(len(unclicked_indices), bool)]),
    )


def pcvr_training_rows(arrays: "SplitArrays", clicked_indices: np.ndarray, unclicked_indices: np.ndarray,
                       teacher_unclicked_logits: np.ndarray) -> "SplitArrays":
    """D''_train as rows: the clicked sample (conversion labels kept), then the unclicked rows whose
    conversion column holds the teacher's pCVR (``sigmoid`` of ``teacher_unclicked_logits``, one per row)."""
    from dataclasses import replace

    sample = assemble_pcvr_sample(clicked_indices, arrays.conversion, unclicked_indices,
                                  1.0 / (1.0 + np.exp(-np.asarray(teacher_unclicked_logits, np.float64))))
    rows = arrays.take(sample.indices)
    return replace(rows, conversion=sample.labels.astype(np.float32))
