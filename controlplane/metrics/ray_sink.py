"""The metrics of a Ray actor through Ray's own metrics API: they appear on Ray's Prometheus
endpoint (prefixed `ray_`) and dashboard beside Ray's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ray.util import metrics

from controlplane.metrics.sink import Counter, Gauge, Histogram, Labels


class _Tagged:
    def __init__(self, metric: Any) -> None:
        self._metric = metric

    def inc(self, value: float, labels: Labels) -> None:
        self._metric.inc(value, tags=dict(labels))

    def set(self, value: float, labels: Labels) -> None:
        self._metric.set(value, tags=dict(labels))

    def observe(self, value: float, labels: Labels) -> None:
        self._metric.observe(value, tags=dict(labels))


class RaySink:
    def counter(self, name: str, help: str, labels: Sequence[str]) -> Counter:
        return _Tagged(metrics.Counter(name, description=help, tag_keys=tuple(labels)))

    def gauge(self, name: str, help: str, labels: Sequence[str]) -> Gauge:
        return _Tagged(metrics.Gauge(name, description=help, tag_keys=tuple(labels)))

    def histogram(self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
        return _Tagged(metrics.Histogram(name, description=help, boundaries=list(buckets), tag_keys=tuple(labels)))
