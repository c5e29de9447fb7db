"""RPC statistics: every attempt passes the client's hooks as an AttemptRecord. Two hooks
ship here: StatsAggregator (counts and latency percentiles per peer, for get_statistics)
and ArrowStatsWriter (Arrow record batches flushed to rotated Parquet files). The schema
lives here and only here."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pyarrow as pa

from controlplane.rpc.stats_files import StatsRetention, retain, stats_files

SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("target", pa.string(), nullable=False),
        pa.field("method", pa.string(), nullable=False),
        pa.field("attempt", pa.int16(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),  # ok | timeout | connection | rejected | auth | ...
        pa.field("error_type", pa.string()),
        # A streamed batch (the default): the time to hand it to the peer's stream, dialing
        # included; over HTTP or Ray: the request's round trip.
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("request_bytes", pa.int64(), nullable=False),
        pa.field("response_bytes", pa.int64(), nullable=False),
        pa.field("entries", pa.int32(), nullable=False),
        pa.field("term", pa.int64(), nullable=False),
    ]
)


class AttemptRecord(NamedTuple):
    """One attempt, its fields in SCHEMA's order (a flush transposes the rows into columns).
    A named tuple: every peer RPC attempt makes one, at a third of a frozen dataclass's cost."""

    time: float  # unix seconds
    source: str
    target: str
    method: str
    attempt: int
    outcome: str
    error_type: str | None
    latency_ms: float
    request_bytes: int
    response_bytes: int
    entries: int
    term: int


class StatsHook(Protocol):
    def __call__(self, record: AttemptRecord) -> None: ...


class StatsAggregator:
    """Running totals and recent latencies per peer."""

    def __init__(self, window: int = 4096) -> None:
        self.window = window
        self.counts: dict[str, int] = defaultdict(int)
        self.latencies: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=self.window))
        self.per_peer: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def __call__(self, record: AttemptRecord) -> None:
        r = record
        self.counts["attempts"] += 1
        self.counts[r.outcome] += 1
        if r.attempt > 1:
            self.counts["retries"] += 1
        self.per_peer[r.target][r.outcome] += 1
        if r.outcome == "ok":
            self.latencies[r.target].append(r.latency_ms)

    def requests_finished(self, ok: bool) -> None:
        self.counts["requests"] += 1
        self.counts["requests_ok" if ok else "requests_failed"] += 1

    def snapshot(self) -> dict[str, Any]:
        c = self.counts
        total = c["requests"]
        attempts = c["attempts"]

        def rate(n: int, d: int) -> float:
            return round(n / d, 4) if d else 0.0

        peers = {}
        for peer, outcomes in sorted(self.per_peer.items()):
            lat = sorted(self.latencies[peer])
            peers[peer] = {
                "attempts": sum(outcomes.values()),
                "outcomes": dict(outcomes),
                "latency_ms": {f"p{q}": _percentile(lat, q) for q in (50, 90, 99)},
            }
        return {
            "total_requests": total,
            "success_rate": rate(c["requests_ok"], total),
            "failure_rate": rate(c["requests_failed"], total),
            "timeout_rate": rate(c["timeout"], attempts),
            "attempts": attempts,
            "retries": c["retries"],
            "auth_rejections": c["auth"],
            "peers": peers,
        }


def _percentile(sorted_values: list[float], q: int) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


class ArrowStatsWriter:
    """Buffers attempts as columns; flush() writes them as one Parquet file. retain() keeps the
    node's files by age and total size and merges small ones as they age (stats_files.py);
    it blocks, so shells run it in a worker thread (stats_files.keep_flushing)."""

    def __init__(
        self, directory: Path | str, node: str, flush_rows: int = 50_000, retention: StatsRetention | None = None
    ) -> None:
        if flush_rows < 1:
            raise ValueError("flush_rows must be positive")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.node = node
        self.flush_rows = flush_rows
        self.retention = retention or StatsRetention()
        self._rows: list[AttemptRecord] = []  # columns are built at flush, off the hot path
        files = stats_files(self.dir, node)
        self._seq = max(f.last for f in files) + 1 if files else 0
        self.rows_written = 0

    def files(self) -> list[Path]:
        return [f.path for f in stats_files(self.dir, self.node)]

    def __call__(self, record: AttemptRecord) -> None:
        self._rows.append(record)
        if len(self._rows) >= self.flush_rows:
            self.flush()

    @property
    def buffered(self) -> int:
        return len(self._rows)

    def to_table(self) -> pa.Table:
        if not self._rows:
            return SCHEMA.empty_table()
        columns = dict(zip(SCHEMA.names, zip(*self._rows, strict=True), strict=True))
        columns["time"] = [int(t * 1_000_000) for t in columns["time"]]
        return pa.Table.from_pydict(columns, schema=SCHEMA)

    def flush(self) -> Path | None:
        if not self.buffered:
            return None
        import pyarrow.parquet as pq  # ~30-75 ms of a process's start: not before the first flush

        table = self.to_table()
        path = self.dir / f"rpc-stats-{self.node}-{self._seq:08d}.parquet"
        tmp = path.with_suffix(".tmp")
        pq.write_table(table, tmp, compression="zstd")
        tmp.replace(path)
        self._seq += 1
        self.rows_written += table.num_rows
        self._rows = []
        return path

    def retain(self, now: float | None = None) -> dict[str, int]:
        return retain(self.dir, self.node, self.retention, now)

    def close(self) -> None:
        self.flush()
