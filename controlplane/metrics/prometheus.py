"""The metrics of a process as Prometheus text (a standalone node's /metrics)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import prometheus_client
from prometheus_client import CollectorRegistry

from controlplane.metrics.sink import Counter, Gauge, Histogram, Labels


class _Labelled:
    def __init__(self, metric: Any) -> None:
        self._metric = metric

    def inc(self, value: float, labels: Labels) -> None:
        self._metric.labels(**labels).inc(value)

    def set(self, value: float, labels: Labels) -> None:
        self._metric.labels(**labels).set(value)

    def observe(self, value: float, labels: Labels) -> None:
        self._metric.labels(**labels).observe(value)


class PrometheusSink:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()

    def counter(self, name: str, help: str, labels: Sequence[str]) -> Counter:
        return _Labelled(prometheus_client.Counter(name, help, list(labels), registry=self.registry))

    def gauge(self, name: str, help: str, labels: Sequence[str]) -> Gauge:
        return _Labelled(prometheus_client.Gauge(name, help, list(labels), registry=self.registry))

    def histogram(self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
        metric = prometheus_client.Histogram(name, help, list(labels), buckets=list(buckets), registry=self.registry)
        return _Labelled(metric)

    def exposition(self) -> tuple[bytes, str]:
        """The body and content type of a scrape."""
        return prometheus_client.generate_latest(self.registry), prometheus_client.CONTENT_TYPE_LATEST
