"""MetricsSink: where instruments live (Ray's metrics, a Prometheus registry, memory for
tests). Instruments take their label values with every update."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Protocol

Labels = Mapping[str, str]


class Counter(Protocol):
    def inc(self, value: float, labels: Labels) -> None: ...


class Gauge(Protocol):
    def set(self, value: float, labels: Labels) -> None: ...


class Histogram(Protocol):
    def observe(self, value: float, labels: Labels) -> None: ...


class MetricsSink(Protocol):
    def counter(self, name: str, help: str, labels: Sequence[str]) -> Counter: ...

    def gauge(self, name: str, help: str, labels: Sequence[str]) -> Gauge: ...

    def histogram(self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram: ...


class _MemoryInstrument:
    def __init__(self, sink: MemorySink, name: str) -> None:
        self._sink, self._name = sink, name

    def _key(self, labels: Labels) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self._name, tuple(sorted(labels.items()))

    def inc(self, value: float, labels: Labels) -> None:
        self._sink.values[self._key(labels)] += value

    def set(self, value: float, labels: Labels) -> None:
        self._sink.values[self._key(labels)] = value

    def observe(self, value: float, labels: Labels) -> None:
        self._sink.observations[self._key(labels)].append(value)


class MemorySink:
    """Values by (name, labels), for tests."""

    def __init__(self) -> None:
        self.values: defaultdict[tuple[str, tuple[tuple[str, str], ...]], float] = defaultdict(float)
        self.observations: defaultdict[tuple[str, tuple[tuple[str, str], ...]], list[float]] = defaultdict(list)

    def counter(self, name: str, help: str, labels: Sequence[str]) -> Counter:
        return _MemoryInstrument(self, name)

    def gauge(self, name: str, help: str, labels: Sequence[str]) -> Gauge:
        return _MemoryInstrument(self, name)

    def histogram(self, name: str, help: str, labels: Sequence[str], buckets: Sequence[float]) -> Histogram:
        return _MemoryInstrument(self, name)

    def value(self, name: str, **labels: str) -> float:
        """The sum over every label set that includes `labels`."""
        return sum(v for (n, ls), v in self.values.items() if n == name and set(labels.items()) <= set(ls))

    def observed(self, name: str, **labels: str) -> list[float]:
        return [
            x for (n, ls), xs in self.observations.items() if n == name and set(labels.items()) <= set(ls) for x in xs
        ]
