"""The gateway's Prometheus metrics: WebSocket connections and frames, refusals, the HTTP API and ingest.

Each gateway keeps them in a registry of its own, served at its `/metrics`; the counters its hot paths
touch are read at scrape time (`_GatewayStats`), and its garbage-collector pauses share the engine's
histogram (operators.metrics.gc_pauses).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from operators.metrics import gc_pauses

__all__ = ["GatewayMetrics"]


class _GatewayStats:
    """Collector reading the gateway's own counters at scrape time (no work on the hot path)."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        stats = self._stats()
        yield GaugeMetricFamily("pulse_ws_connections", "Open WebSocket connections.", stats["connections"])
        yield GaugeMetricFamily("pulse_ws_subscriptions", "Active user subscriptions.", stats["subscriptions"])
        frames = CounterMetricFamily("pulse_ws_frames", "Decision frames by outcome: delivered, or dropped because "
                                     "the client read too slowly.", labels=["outcome"])
        frames.add_metric(["delivered"], stats["delivered"])
        frames.add_metric(["dropped"], stats["dropped"])
        yield frames
        yield GaugeMetricFamily("pulse_gateway_redis_connected", "1 while the Redis pub/sub link is up.",
                                int(stats["redis_connected"]))


class GatewayMetrics:
    """Metrics of one gateway (a registry of its own): WebSocket side, auth refusals, HTTP API and ingest."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_GatewayStats(stats))
        self.registry.register(gc_pauses())
        self.refused = Counter("pulse_ws_refused", "WebSocket subscriptions or connections refused, by reason.",
                               ["reason"], registry=self.registry)
        self.decisions_seen = Counter("pulse_gateway_decisions", "Decisions received from Redis pub/sub.",
                                      registry=self.registry)
        self.ingested = Counter("pulse_ingest_events", "Events posted to /v1/events, by status and topic kind.",
                                ["status", "topic"], registry=self.registry)
        self.http = Counter("pulse_http_requests", "HTTP API requests, by route and status code.", ["route", "code"],
                            registry=self.registry)
