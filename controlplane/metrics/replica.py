"""What a replica reports, to whichever sink its shell gives: Raft role, term and indices, lag,
proposals and reads, proposal round latency, RPC attempts and latency by method and outcome,
WAL fsync latency, snapshot size and duration, telemetry outcomes and report-to-visible
latency. Sampled once a second from the replica's own state, plus the RPC client's attempt
hook and a storage wrapper for disk timings, which only count and keep what they see: the
sample hands it to the sink. Nothing on the Raft path records into a sink, whose every record
costs ~10 us in a Ray actor, and a W1 write made several on each replica.

Names (Ray's endpoint prefixes them with `ray_`):
    controlplane_raft_term, controlplane_raft_is_leader, controlplane_raft_commit_index,
    controlplane_raft_applied_index, controlplane_raft_apply_lag_entries,
    controlplane_raft_follower_lag_entries{follower}, controlplane_proposals_total,
    controlplane_reads_total, controlplane_proposal_round_seconds,
    controlplane_rpc_attempts_total{method,outcome}, controlplane_rpc_seconds{method},
    controlplane_wal_fsync_seconds, controlplane_snapshot_bytes, controlplane_snapshot_seconds,
    controlplane_telemetry_reports_total{outcome}, controlplane_telemetry_visible_seconds{quantile}
All carry group and replica labels.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from controlplane.metrics.sink import MetricsSink
from controlplane.raft import Role

if TYPE_CHECKING:
    from controlplane.node import NodeStorage
    from controlplane.raft.messages import Ready, Snapshot
    from controlplane.replica import Replica
    from controlplane.rpc.stats import AttemptRecord

log = logging.getLogger(__name__)
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SLOW_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
TELEMETRY_OUTCOMES = ("accepted", "stale", "duplicate", "rejected")
# Timings kept between two samples: thousands a second under load; a sampler held up longer
# than this allows loses the oldest timings (never the attempt counts).
KEPT_TIMINGS = 65_536


class ReplicaMetrics:
    def __init__(self, sink: MetricsSink, group: str, replica: str) -> None:
        self.labels = {"group": group, "replica": replica}
        base = ("group", "replica")
        self.term = sink.gauge("controlplane_raft_term", "current Raft term", base)
        self.is_leader = sink.gauge("controlplane_raft_is_leader", "1 while this replica leads", base)
        self.commit = sink.gauge("controlplane_raft_commit_index", "highest log index known committed", base)
        self.applied = sink.gauge("controlplane_raft_applied_index", "highest log index applied", base)
        self.apply_lag = sink.gauge("controlplane_raft_apply_lag_entries", "committed but not yet applied", base)
        self.follower_lag = sink.gauge(
            "controlplane_raft_follower_lag_entries", "leader only: entries a follower is behind", (*base, "follower")
        )
        self.proposals = sink.counter("controlplane_proposals_total", "commands proposed here", base)
        self.reads = sink.counter("controlplane_reads_total", "queries served here", base)
        self.round = sink.histogram(
            "controlplane_proposal_round_seconds", "from proposal to answer, per round", base, LATENCY_BUCKETS
        )
        self.rpc_attempts = sink.counter(
            "controlplane_rpc_attempts_total", "RPC attempts to peers", (*base, "method", "outcome")
        )
        self.rpc_seconds = sink.histogram(
            "controlplane_rpc_seconds", "RPC attempt latency", (*base, "method"), LATENCY_BUCKETS
        )
        self.fsync = sink.histogram("controlplane_wal_fsync_seconds", "durable WAL writes", base, LATENCY_BUCKETS)
        self.snapshot_bytes = sink.gauge("controlplane_snapshot_bytes", "size of the newest snapshot", base)
        self.snapshot_seconds = sink.histogram(
            "controlplane_snapshot_seconds", "writing a snapshot", base, SLOW_BUCKETS
        )
        self.telemetry = sink.counter(
            "controlplane_telemetry_reports_total", "telemetry reports applied here", (*base, "outcome")
        )
        self.visible = sink.gauge(
            "controlplane_telemetry_visible_seconds",
            "report time to applied here, over the last second's reports",
            (*base, "quantile"),
        )
        self._seen = {"proposed": 0, "reads": 0, **dict.fromkeys(TELEMETRY_OUTCOMES, 0)}
        self._attempts: dict[tuple[str, str], int] = {}  # (method, outcome) -> attempts since the last sample
        self._rpc_seconds: deque[tuple[str, float]] = deque(maxlen=KEPT_TIMINGS)
        self.fsync_seconds: deque[float] = deque(maxlen=KEPT_TIMINGS)
        self._telemetry_index: int | None = None  # the change feed read so far (None: from now on)
        self._followers: set[int] = set()

    # --- hooks --------------------------------------------------------------------------------

    def record_attempt(self, record: AttemptRecord) -> None:
        """The RPC client's stats hook: every attempt, counted here until the next sample."""
        key = (record.method, record.outcome)
        self._attempts[key] = self._attempts.get(key, 0) + 1
        self._rpc_seconds.append((record.method, record.latency_ms / 1000))

    def storage(self, inner: NodeStorage) -> MeasuredStorage:
        return MeasuredStorage(inner, self)

    # --- sampling -----------------------------------------------------------------------------

    def sample(self, replica: Replica) -> None:
        status = replica.node.status()
        labels = self.labels
        self.term.set(status.term, labels)
        self.is_leader.set(1 if status.role is Role.LEADER else 0, labels)
        self.commit.set(status.commit, labels)
        self.applied.set(replica.node.applied_index, labels)
        self.apply_lag.set(max(0, status.commit - replica.node.applied_index), labels)
        followers = set(status.match) - {replica.id} if status.role is Role.LEADER else set()
        for follower in followers | self._followers:  # a follower no longer followed reads 0
            lag = max(0, status.commit - status.match[follower]) if follower in followers else 0
            self.follower_lag.set(lag, {**labels, "follower": str(follower)})
        self._followers = followers
        self._count(self.proposals, "proposed", replica.proposed)
        self._count(self.reads, "reads", replica.reads_served)
        while replica.round_seconds:
            self.round.observe(replica.round_seconds.popleft(), labels)
        self.record_timings()
        counts = replica.state.telemetry
        for outcome in TELEMETRY_OUTCOMES:
            self._count(self.telemetry, outcome, getattr(counts, outcome), {"outcome": outcome})
        self._sample_visibility(replica)

    def record_timings(self) -> None:
        """Record into the sink the attempts and timings counted since the last call."""
        attempts, self._attempts = self._attempts, {}
        for (method, outcome), n in attempts.items():
            self.rpc_attempts.inc(n, {**self.labels, "method": method, "outcome": outcome})
        by_method: dict[str, dict[str, str]] = {}
        while self._rpc_seconds:
            method, seconds = self._rpc_seconds.popleft()
            labels = by_method.get(method)
            if labels is None:
                labels = by_method[method] = {**self.labels, "method": method}
            self.rpc_seconds.observe(seconds, labels)
        while self.fsync_seconds:
            self.fsync.observe(self.fsync_seconds.popleft(), self.labels)

    def _count(self, counter: Any, key: str, total: int, extra: dict[str, str] | None = None) -> None:
        delta = total - self._seen[key]
        if delta < 0:  # restored from a snapshot: the totals started over
            delta = total
        if delta:
            counter.inc(delta, {**self.labels, **(extra or {})})
        self._seen[key] = total

    def _sample_visibility(self, replica: Replica) -> None:
        if self._telemetry_index is None:
            self._telemetry_index = replica.node.applied_index
            return
        answer = replica.feed.changes_since(self._telemetry_index, ["telemetry"])
        self._telemetry_index = int(answer["index"])
        if answer["reset"]:
            return  # fell out of the feed's window: start again from here
        delays: list[tuple[float, int]] = []
        for change in answer["changes"]:
            applied_at = change.get("applied_at")
            for start, count in change.get("report_times") or []:
                if applied_at is not None:
                    delays.append((max(0.0, applied_at - start), int(count)))
        if not delays:
            return
        delays.sort()
        total = sum(n for _, n in delays)
        for q in (0.5, 0.99):
            rank, seen = q * total, 0
            for delay, n in delays:
                seen += n
                if seen >= rank:
                    self.visible.set(delay, {**self.labels, "quantile": str(q)})
                    break

    async def sample_every(self, replica: Replica, interval: float = 1.0) -> None:
        while True:
            await asyncio.sleep(interval)
            try:
                self.sample(replica)
            except Exception:  # a metric must never take the replica down
                log.exception("sampling metrics failed")


class MeasuredStorage:
    """A NodeStorage that times durable writes and snapshots into ReplicaMetrics."""

    def __init__(self, inner: NodeStorage, metrics: ReplicaMetrics, clock: Callable[[], float] = time.perf_counter):
        self._inner, self._metrics, self._clock = inner, metrics, clock

    def bootstrap(self, founders: list[int]) -> None:
        self._inner.bootstrap(founders)

    def load(self) -> Any:
        return self._inner.load()

    def record_peers_heard(self, peers: frozenset[int]) -> None:
        self._inner.record_peers_heard(peers)

    def persist(self, rd: Ready) -> None:
        started = self._clock()
        self._inner.persist(rd)
        if rd.must_sync():
            self._metrics.fsync_seconds.append(self._clock() - started)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        started = self._clock()
        self._inner.save_snapshot(snapshot)
        self._metrics.snapshot_seconds.observe(self._clock() - started, self._metrics.labels)
        self._metrics.snapshot_bytes.set(len(snapshot.data), self._metrics.labels)

    def compact_log(self, through_index: int) -> None:
        self._inner.compact_log(through_index)

    def close(self) -> None:
        self._inner.close()
