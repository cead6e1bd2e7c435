"""The predictor's Prometheus metrics: traffic counters, and the latest per-arm figures as gauges.

Counters move on every request. The figures (AUC, LogLoss, PCOC, paired deltas with interval
bounds) come from the last `WindowFigures` the server computed (every `metrics_refresh_s`, on the
rows since the last swap); a scrape only reads that snapshot, it never computes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

from prometheus_client import Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.predictor.arm_metrics import WindowFigures

ROWS = Counter("crossadapt_predictor_rows_total", "Rows scored, by arm and role (served or shadow).",
               ["model", "arm", "role"])
UNKNOWN_VALUES = Counter("crossadapt_predictor_unknown_values_total",
                         "Feature values of served rows that the arm's vocabulary did not know (mapped to the unknown row).",
                         ["model", "arm", "field"])
SHADOW_DROPPED = Counter("crossadapt_predictor_shadow_dropped_rows_total",
                         "Shadow scores not taken because the shadow queue was full.", ["model"])
FEEDBACK = Counter("crossadapt_predictor_feedback_labels_total", "Labels received, by whether a kept row matched.",
                   ["model", "result"])
EXPOSURES = Counter("crossadapt_predictor_exposure_rows_total",
                    "Exposure-log rows written to the store, or lost (overwritten before a flush, or a failed write).",
                    ["model", "result"])
SWAPS = Counter("crossadapt_predictor_swaps_total", "Hot swaps of an arm.", ["model", "arm"])


class FiguresCollector(Collector):
    """Gauges of the latest figures: `crossadapt_predictor_arm_{auc,logloss,pcoc,...}{model,arm}` and deltas."""

    def __init__(self, model: str, latest: Callable[[], WindowFigures | None], weight: Callable[[], float]) -> None:
        self.model = model
        self.latest = latest
        self.weight = weight

    def collect(self) -> Iterator[GaugeMetricFamily]:
        weight = GaugeMetricFamily("crossadapt_predictor_student_weight", "Share of cohorts served by the student.",
                                   labels=["model"])
        weight.add_metric([self.model], self.weight())
        yield weight
        figures = self.latest()
        if figures is None:
            return
        arm_gauges = {
            "auc": "AUC", "logloss": "LogLoss", "pcoc": "predicted over observed clicks",
            "served_rows": "rows served", "scored_rows": "rows scored (served + shadow)",
            "labelled_rows": "scored rows with a label",
        }
        for attribute, what in arm_gauges.items():
            family = GaugeMetricFamily(f"crossadapt_predictor_arm_{attribute}",
                                       f"Per arm, since the last swap: {what}.", labels=["model", "arm"])
            for arm in (figures.teacher, figures.student):
                family.add_metric([self.model, arm.name], float(getattr(arm, attribute)))
            yield family
        paired = GaugeMetricFamily("crossadapt_predictor_paired_rows", "Labelled rows both arms scored.",
                                   labels=["model"])
        paired.add_metric([self.model], figures.paired.rows)
        yield paired
        delta = GaugeMetricFamily("crossadapt_predictor_paired", "Paired figures (student - teacher deltas, PCOC) "
                                  "with bootstrap interval bounds.", labels=["model", "figure", "bound"])
        for name in ("delta_auc", "delta_logloss", "student_pcoc", "teacher_pcoc"):
            interval = getattr(figures.paired, name)
            for bound in ("estimate", "lower", "upper"):
                value = getattr(interval, bound)
                delta.add_metric([self.model, name, bound], value if math.isfinite(value) else math.nan)
        yield delta
