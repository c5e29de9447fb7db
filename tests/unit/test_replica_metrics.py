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
