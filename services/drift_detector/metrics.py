"""Prometheus gauges of the live drift states, read from the store at scrape time (every replica agrees).

    crossadapt_drift_divergence{state, feature}   per-feature divergence behind the current Δ_shift
    crossadapt_drift_shift{state}                 Δ_shift (the stream's once two windows completed)
    crossadapt_drift_replay_ratio{state}          r_enh now
    crossadapt_drift_rows{state}                  stream rows fed
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.drift_detector.live import LiveDrift, LiveHead

log = logging.getLogger(__name__)


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "divergence": GaugeMetricFamily("crossadapt_drift_divergence",
                                        "Per-feature divergence between adjacent windows of a live drift state.",
                                        labels=["state", "feature"]),
        "shift": GaugeMetricFamily("crossadapt_drift_shift", "Delta_shift of a live drift state.", labels=["state"]),
        "ratio": GaugeMetricFamily("crossadapt_drift_replay_ratio", "Replay ratio r_enh of a live drift state.",
                                   labels=["state"]),
        "rows": GaugeMetricFamily("crossadapt_drift_rows", "Stream rows fed to a live drift state.", labels=["state"]),
    }


class DriftCollector(Collector):
    """The gauges above for every live state (heads cached for `cache_s`)."""

    def __init__(self, live: LiveDrift, cache_s: float = 2.0) -> None:
        self.live = live
        self.cache_s = cache_s
        self._cached: tuple[float, list[LiveHead]] | None = None

    def _heads(self) -> list[LiveHead]:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.cache_s:
            return self._cached[1]
        heads = []
        for name in self.live.names():
            try:
                heads.append(self.live.get(name))
            except Exception:  # noqa: BLE001 - a state deleted mid-scrape is not an error
                continue
        self._cached = (now, heads)
        return heads

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The names only: registering must not read the store."""
        yield from _families().values()

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = _families()
        try:
            heads = self._heads()
        except Exception:  # a broken store must not break /metrics
            log.exception("could not read the live drift states")
            heads = []
        for head in heads:
            for feature in head.features:
                families["divergence"].add_metric([head.name, feature.name], feature.mean)
            families["shift"].add_metric([head.name], head.shift)
            families["ratio"].add_metric([head.name], head.replay_ratio)
            families["rows"].add_metric([head.name], head.rows)
        yield from families.values()
