"""What a replica reports to its metrics sink, sampled from a running single-node replica."""

from __future__ import annotations

import asyncio
import time

from controlplane.metrics.prometheus import PrometheusSink
from controlplane.metrics.replica import ReplicaMetrics
from controlplane.metrics.sink import MemorySink
from controlplane.raft.storage import MemoryStorage
from controlplane.replica import Replica, ReplicaSettings
from controlplane.rpc.transport import InMemoryNetwork
from controlplane.state.fleet import encode
from controlplane.state.telemetry import encode_entry, normalize


def test_samples_follow_the_replica_through_commands_reads_and_telemetry():
    async def go():
        sink = MemorySink()
        metrics = ReplicaMetrics(sink, "g", "1")
        storage = MemoryStorage()
        storage.bootstrap([1])
        replica = Replica(
            1, metrics.storage(storage), InMemoryNetwork().transport(), lambda n: f"mem://{n}", ReplicaSettings(0.01)
        )
        await replica.start()
        try:
            while not replica.node.is_leader:
                await asyncio.sleep(0.01)
            metrics.sample(replica)
            assert sink.value("controlplane_raft_is_leader", group="g", replica="1") == 1
            first_commit = sink.value("controlplane_raft_commit_index")
            await replica.propose_many([encode({"type": "register_station", "station": "a"})])
            await replica.propose_many([encode({"type": "register_uav", "uav": f"u{i}", "home_station": "a"})
                                        for i in range(5)])  # fmt: skip
            await replica.query("uavs")
            now = time.time()
            for report in ({"uav": "u0", "time": now - 0.5, "seq": 1}, {"uav": "u0", "time": now - 9, "seq": 0}):
                table, _ = normalize([report])  # the second is older than the first: stale
                await replica.node.propose(encode_entry(table, auto_register=False), 5.0)
            metrics.sample(replica)
            assert sink.value("controlplane_proposals_total") == 6
            assert sink.value("controlplane_reads_total") == 1
            assert sink.value("controlplane_raft_commit_index") > first_commit
            assert sink.value("controlplane_raft_apply_lag_entries") == 0
            assert len(sink.observed("controlplane_proposal_round_seconds")) == 2
            assert sink.observed("controlplane_wal_fsync_seconds")  # the durable writes were timed
            assert sink.value("controlplane_telemetry_reports_total", outcome="accepted") == 1
            assert sink.value("controlplane_telemetry_reports_total", outcome="stale") == 1
            visible = sink.value("controlplane_telemetry_visible_seconds", quantile="0.5")
            assert 0.4 < visible < 5  # the newer report was made half a second before it applied
            metrics.sample(replica)  # nothing new: counters do not move
            assert sink.value("controlplane_proposals_total") == 6
        finally:
            await replica.stop()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_prometheus_exposition_carries_the_names_and_labels():
    sink = PrometheusSink()
    metrics = ReplicaMetrics(sink, "fleet", "node_1")
    metrics.proposals.inc(3, metrics.labels)
    metrics.term.set(7, metrics.labels)
    body, content_type = sink.exposition()
    text = body.decode()
    assert content_type.startswith("text/plain")
    assert 'controlplane_proposals_total{group="fleet",replica="node_1"} 3.0' in text
    assert 'controlplane_raft_term{group="fleet",replica="node_1"} 7.0' in text


def test_prometheus_series_of_different_labels_stay_apart_when_recorded_again():
    sink = PrometheusSink()
    metrics = ReplicaMetrics(sink, "fleet", "node_1")
    for method, outcome, times in [("append", "ok", 3), ("append", "timeout", 2), ("vote", "ok", 1)]:
        for _ in range(times):
            metrics.rpc_attempts.inc(1, {**metrics.labels, "method": method, "outcome": outcome})
    metrics.rpc_attempts.inc(1, {"outcome": "ok", "method": "vote", **metrics.labels})  # another order
    text = sink.exposition()[0].decode()
    series = 'controlplane_rpc_attempts_total{group="fleet",method="%s",outcome="%s",replica="node_1"} %s'
    assert series % ("append", "ok", "3.0") in text
    assert series % ("append", "timeout", "2.0") in text
    assert series % ("vote", "ok", "2.0") in text


class _CountingSink(MemorySink):
    """A MemorySink that counts the records made into it (each costs ~10 us on Ray)."""

    def __init__(self) -> None:
        super().__init__()
        self.records = 0

    def _counted(self, instrument):
        sink = self

        class Counted:
            def inc(self, value, labels):
                sink.records += 1
                instrument.inc(value, labels)

            def observe(self, value, labels):
                sink.records += 1
                instrument.observe(value, labels)

        return Counted()

    def counter(self, name, help, labels):
        return self._counted(super().counter(name, help, labels))

    def histogram(self, name, help, labels, buckets):
        return self._counted(super().histogram(name, help, labels, buckets))


def test_rpc_attempts_and_fsyncs_are_counted_on_the_raft_path_and_recorded_by_the_sample():
    from controlplane.raft import Role
    from controlplane.raft.messages import Entry, HardState, Ready
    from controlplane.rpc.stats import AttemptRecord

    sink = _CountingSink()
    metrics = ReplicaMetrics(sink, "fleet", "node_1")
    storage = MemoryStorage()
    storage.bootstrap([1])
    measured = metrics.storage(storage)
    outcomes = [("append_entries", "ok")] * 60 + [("append_entries", "timeout")] * 3 + [("heartbeat", "ok")] * 20
    for i, (method, outcome) in enumerate(outcomes):
        metrics.record_attempt(AttemptRecord(0.0, "1", "2", method, 1, outcome, None, i / 10, 10, 0, 1, 1))
    for index in range(2, 7):
        entry = Entry(1, index, b"x")
        measured.persist(Ready(HardState(1, 1, 0), (entry,), None, (), (), (), 1, Role.LEADER, 1))
    assert sink.records == 0  # the Raft path only counted

    metrics.record_timings()
    assert sink.value("controlplane_rpc_attempts_total", method="append_entries", outcome="ok") == 60
    assert sink.value("controlplane_rpc_attempts_total", method="append_entries", outcome="timeout") == 3
    assert sink.value("controlplane_rpc_attempts_total", method="heartbeat") == 20
    assert sorted(sink.observed("controlplane_rpc_seconds", method="append_entries")) == [
        i / 10 / 1000 for i in range(63)
    ]
    assert len(sink.observed("controlplane_rpc_seconds", method="heartbeat")) == 20
    assert len(sink.observed("controlplane_wal_fsync_seconds")) == 5
    assert sink.records == 3 + 83 + 5  # one increment per series, one observation per timing
    metrics.record_timings()  # recorded once: nothing twice
    assert sink.records == 3 + 83 + 5
