"""Prometheus metrics shared by the services: RPC counts and latency, operations by state.

Served on `CROSSADAPT_METRICS_PORT` (`/metrics`) by `start_metrics_server`. The operations gauge
is computed at scrape time from the operation store, so every replica reports the same truth.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.operations import OperationState, OperationStore

log = logging.getLogger(__name__)

GRPC_REQUESTS = Counter(
    "crossadapt_grpc_requests_total", "gRPC requests handled, by final status code.", ["service", "method", "code"]
)
GRPC_LATENCY = Histogram(
    "crossadapt_grpc_request_duration_seconds",
    "gRPC handling time (for streams: until the stream ends).",
    ["service", "method"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)


class OperationsCollector(Collector):
    """`crossadapt_operations{kind, state}`: how many operations are in each state (cached briefly)."""

    def __init__(self, store: OperationStore, cache_s: float = 5.0) -> None:
        self.store = store
        self.cache_s = cache_s
        self._cached: tuple[float, Tally[tuple[str, str]]] | None = None

    def _counts(self) -> Tally[tuple[str, str]]:
        now = time.monotonic()
        if self._cached and now - self._cached[0] < self.cache_s:
            return self._cached[1]
        counts: Tally[tuple[str, str]] = Tally()
        for operation_id in self.store.list_ids():
            try:
                record = self.store.get(operation_id)
            except Exception:  # noqa: BLE001 - a record deleted mid-scrape is not an error
                continue
            counts[(record.kind, record.state.value)] += 1
        self._cached = (now, counts)
        return counts

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The metric's name only: registering must not read (and cache) the store before any operation runs."""
        yield GaugeMetricFamily("crossadapt_operations", "Operations by kind and state.", labels=["kind", "state"])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("crossadapt_operations", "Operations by kind and state.", labels=["kind", "state"])
        try:
            counts = self._counts()
        except Exception:  # a broken store must not break /metrics
            log.exception("could not count operations")
            counts = Tally()
        kinds = {kind for kind, _ in counts}
        for kind in sorted(kinds):
            for state in OperationState:
                family.add_metric([kind, state.value], counts.get((kind, state.value), 0))
        yield family


def start_metrics_server(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> int:
    """Serve `/metrics` on host:port in a daemon thread; port 0 means disabled (returns 0)."""
    if port == 0:
        return 0
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
