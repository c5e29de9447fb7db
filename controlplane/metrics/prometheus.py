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
        # prometheus_client's labels() checks and orders the names on every call (~5 us, a few
        # per Raft message batch); a label set's child is the same object every time.
        self._children: dict[tuple[tuple[str, str], ...], Any] = {}

    def _child(self, labels: Labels) -> Any:
        key = tuple(labels.items())
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = self._metric.labels(**labels)
        return child

    def inc(self, value: float, labels: Labels) -> None:
        self._child(labels).inc(value)

    def set(self, value: float, labels: Labels) -> None:
        self._child(labels).set(value)

    def observe(self, value: float, labels: Labels) -> None:
        self._child(labels).observe(value)


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
