"""Prometheus metrics of one API process, in its own registry (so several apps can live in one process)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hubcensus.queries.datadir import SnapshotMeta


class Metrics:
    """The counters, histograms and gauges the API exports at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "hubcensus_http_requests", "HTTP requests answered", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "hubcensus_http_request_duration_seconds",
            "Time to answer, by route",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self.snapshot_age = Gauge(
            "hubcensus_latest_snapshot_age_seconds",
            "Seconds since the latest snapshot was taken",
            registry=self.registry,
        )
        self.latest_models = Gauge(
            "hubcensus_latest_snapshot_models", "Models in the latest snapshot", registry=self.registry
        )
        self.snapshots = Gauge("hubcensus_snapshots", "Published snapshots", registry=self.registry)

    def observe_store(self, snapshots: Sequence[SnapshotMeta]) -> None:
        """Refresh the snapshot gauges (at scrape time: they are cheap to compute)."""
        self.snapshots.set(len(snapshots))
        if snapshots:
            self.snapshot_age.set((datetime.now(UTC) - snapshots[0].taken_at).total_seconds())
            self.latest_models.set(snapshots[0].models)


class MetricsMiddleware:
    """Count and time every request by its route template (never the raw path: ids would explode labels)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(template, str(status)).inc()
            self.metrics.latency.labels(template).observe(time.perf_counter() - started)
