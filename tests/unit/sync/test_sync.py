"""The sync package without Ray: change feed windows and resets, coalescing by size and time,
the ingest path, and the DataSynchronizer over a 3-replica in-process group."""

from __future__ import annotations

import asyncio
import json

import pyarrow as pa
import pytest

from controlplane.raft.messages import Entry
from controlplane.state.fleet import FleetState, encode
from controlplane.state.telemetry import decode_entry, encode_entry, join_segments, normalize
from controlplane.sync.changefeed import ChangeFeed
from controlplane.sync.coalescer import Coalescer, CoalescerConfig
from controlplane.sync.ingest import TelemetryIngest
from controlplane.sync.synchronizer import DataSynchronizer
from tests.fleet_group import HarnessFleet


def apply(feed: ChangeFeed, index: int, cmd: dict) -> dict:
    return feed.apply(Entry(1, index, json.dumps(cmd).encode()))


def test_change_feed_serves_changes_after_an_index_then_resets_when_it_is_too_old():
    feed = ChangeFeed(FleetState(), window=4)
    apply(feed, 1, {"type": "register_station", "station": "a"})
    apply(feed, 2, {"type": "register_uav", "uav": "u1", "home_station": "a"})
    apply(feed, 3, {"type": "create_group", "group": "g"})
    answer = feed.changes_since(1)
    assert not answer["reset"] and answer["index"] == 3
    assert [(c["index"], c["kind"], c["id"]) for c in answer["changes"]] == [(2, "uav", "u1"), (3, "group", "g")]
    assert answer["changes"][0]["record"]["home_station"] == "a"
    assert feed.changes_since(1, ["group"])["changes"][0]["id"] == "g"
    assert feed.changes_since(3)["changes"] == []
    apply(feed, 4, {"type": "delete_uav", "uav": "u1"})
    assert feed.changes_since(3)["changes"][0]["record"] is None  # deleted
    for i in range(5, 9):
        apply(feed, i, {"type": "create_group", "group": f"g{i}"})
    reset = feed.changes_since(1)  # entry 2 left the window
    assert reset["reset"] and reset["index"] == 8
    assert sorted(c["id"] for c in reset["changes"] if c["kind"] == "group") == ["g", "g5", "g6", "g7", "g8"]
    with pytest.raises(ValueError, match="kinds"):
        feed.changes_since(0, ["weather"])


def test_each_change_carries_the_record_as_the_state_had_it_then():
    """Every kind's record, nested values and key order included, as `state.record` gave it
    when the change was applied; a deletion as None."""
    feed = ChangeFeed(FleetState())
    commands = [
        {"type": "register_station", "station": "a"},
        {"type": "register_uav", "uav": "u1", "home_station": "a", "lat": 47.5, "lon": 8.5, "battery": 80},
        {"type": "create_mission", "mission": "m1", "waypoints": [{"lat": 47, "lon": 8, "alt": 30}] * 2, "priority": 2},
        {"type": "create_group", "group": "g"},
        {"type": "add_member", "group": "g", "uav": "u1"},
        {"type": "update_uav", "uav": "u1", "battery": 55.5},
        {"type": "register_uav", "uav": "u2", "home_station": "a"},
        {"type": "delete_uav", "uav": "u2"},
    ]
    for index, cmd in enumerate(commands, start=1):
        assert apply(feed, index, cmd)["ok"], cmd
        changes = feed.changes_since(index - 1)["changes"]
        assert changes, cmd
        for change in changes:
            now = feed.state.record(change["kind"], change["id"])
            assert change["record"] == now and list(change["record"] or ()) == list(now or ())
    assert [c["record"] for c in feed.changes_since(7)["changes"] if c["kind"] == "uav"] == [None]
    history = [(c["kind"], c["id"]) for c in feed.changes_since(0)["changes"]]
    assert ("mission", "m1") in history and ("group", "g") in history and ("station", "a") in history


def test_change_feed_resets_watchers_after_a_snapshot_restore():
    source = FleetState()
    for i, cmd in enumerate(
        [{"type": "register_station", "station": "a"}, {"type": "create_group", "group": "g"}], start=1
    ):
        source.apply(Entry(1, i, encode(cmd)))
    feed = ChangeFeed(FleetState())
    feed.restore(source.snapshot())
    assert feed.horizon == 2 and feed.changes_since(1)["reset"]
    assert not feed.changes_since(2)["reset"]


def test_change_feed_long_poll_wakes_on_a_change():
    async def go():
        feed = ChangeFeed(FleetState())
        waiter = asyncio.create_task(feed.wait(0, timeout=5))
        await asyncio.sleep(0.01)
        assert not waiter.done()
        apply(feed, 1, {"type": "register_station", "station": "a"})
        answer = await asyncio.wait_for(waiter, 1)
        assert answer["changes"][0]["id"] == "a"
        empty = await feed.wait(1, timeout=0.05)
        assert empty["changes"] == [] and empty["index"] == 1

    asyncio.run(go())


def table(n: int, start: int = 0) -> pa.Table:
    t, _ = normalize([{"uav": f"u{i}", "time": float(i), "seq": i} for i in range(start, start + n)])
    return t


def test_coalescer_cuts_by_rows_and_by_time_and_passes_failures_on():
    """(Batches grow while every send slot is busy: see the next test.)"""

    async def go():
        sent: list[int] = []

        async def send(batch: list[pa.Table]) -> str:
            sent.append(sum(t.num_rows for t in batch))
            if sent[-1] == 7:
                raise ConnectionError("leader gone")
            return f"entry-{len(sent)}"

        c = Coalescer(send, lambda t: t.num_rows, CoalescerConfig(max_size=10, max_delay=0.05))
        a, b = c.submit(table(6)), c.submit(table(6, 6))  # 12 >= 10: cut at once, at most 10 rows
        assert await a == "entry-1" and sent == [6]
        assert not b.done()  # the rest waits for more rows or for the delay
        assert await b == "entry-2" and sent == [6, 6]
        late = c.submit(table(3))
        await asyncio.sleep(0.01)
        assert sent == [6, 6]  # waits for more
        assert await late == "entry-3" and sent == [6, 6, 3]  # then the delay cuts it
        with pytest.raises(ConnectionError):
            await c.submit(table(7))
        assert c.failures == 1 and c.size_sent == 15
        await c.close()

    asyncio.run(go())
    with pytest.raises(ValueError, match="max_size"):
        CoalescerConfig(max_size=0)


def test_coalescer_batches_grow_while_the_receiver_is_busy():
    async def go():
        sent: list[int] = []
        gate = asyncio.Event()

        async def send(batch: list[pa.Table]) -> None:
            sent.append(sum(t.num_rows for t in batch))
            await gate.wait()

        c = Coalescer(send, lambda t: t.num_rows, CoalescerConfig(max_size=1000, max_delay=0.0, max_in_flight=1))
        first = c.submit(table(1))
        await asyncio.sleep(0.01)
        rest = [c.submit(table(1, i)) for i in range(1, 50)]  # the one slot is busy
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.gather(first, *rest)
        assert sent == [1, 49]

    asyncio.run(go())


def test_ingest_rejects_bad_rows_and_forwards_good_ones():
    async def go():
        forwarded: list[pa.Table] = []

        async def forward(segment: bytes, rows: int) -> dict:
            [table], _ = decode_entry(join_segments([segment], auto_register=False))
            forwarded.append(table)
            return {"accepted": rows}

        ingest = TelemetryIngest("alpha", forward, CoalescerConfig(max_size=1000, max_delay=0.01))
        answer = await ingest.report(
            [{"uav": "u1", "time": 1.0, "seq": 1, "lat": 47.0}, {"uav": "u2", "time": 1.0, "seq": 1, "lat": 200}],
            wait=True,
        )
        assert answer["accepted"] == 1 and answer["rejected"] == 1
        assert answer["reasons"] == [{"row": 1, "uav": "u2", "field": "lat", "reason": "must be within [-90.0, 90.0]"}]
        assert answer["applied"] == {"accepted": 1}
        assert forwarded[0].column("station").to_pylist() == ["alpha"]
        stats = await ingest.flush()
        assert (stats["received"], stats["committed"], stats["failed"]) == (2, 1, 0)

    asyncio.run(go())


def test_data_synchronizer_pushes_pulls_follows_and_compares():
    async def go():
        client = HarnessFleet()
        sync = DataSynchronizer(client)
        await client.command({"type": "register_station", "station": "a"})
        assert (await sync.sync_uav("u1", "create", {"home_station": "a", "battery": 90}))["ok"]
        assert await sync.sync_all_uavs() == 1 and sync.uavs["u1"]["battery"] == 90
        wp = [{"lat": 1.0, "lon": 1.0, "alt": 10.0}]
        assert (await sync.sync_mission("m1", "create", {"waypoints": wp}))["ok"]
        await sync.poll_changes()  # incremental: the mission and the UAV it was assigned to
        assert sync.missions["m1"]["status"] == "assigned" and sync.uavs["u1"]["status"] == "in_mission"
        # Someone else moves the mission on; this station's view is now behind.
        await client.command({"type": "set_mission_status", "mission": "m1", "status": "active"})
        stale = await sync.sync_mission("m1", "update", {"status": "aborted"})
        assert stale["conflict"]  # the version this station saw is old: no silent overwrite
        await sync.poll_changes()
        assert (await sync.sync_mission("m1", "update", {"status": "completed"}))["ok"]
        await sync.sync_group("g", "create")
        assert (await sync.sync_group("g", "update", {"add": "u1"}))["ok"]
        await sync.poll_changes()
        assert sync.groups["g"]["members"] == ["u1"]
        assert (await sync.sync_uav("u1", "delete"))["ok"]
        await sync.poll_changes()
        assert "u1" not in sync.uavs and sync.groups["g"]["members"] == []
        with pytest.raises(ValueError, match="op"):
            await sync.sync_uav("u1", "upsert")
        report = await sync.compare_digests()
        assert report.ok and not report.missing and len(report.digests) == 3
        # Telemetry goes through the same group; replicas still agree.
        t, _ = normalize([{"uav": "u2", "time": 1.0, "seq": 1, "station": "a"}])
        assert client.propose(encode_entry(t, auto_register=True))["registered"] == 1
        assert (await sync.compare_digests()).ok
        # A replica whose state differs is reported, loudly.
        client.feeds[3].state.stations.add("rogue")
        bad = await sync.compare_digests()
        assert bad.diverged == ["stations"]

    asyncio.run(go())


def test_data_synchronizer_as_the_spec_builds_it_reads_and_repairs_the_local_managers():
    async def go():
        client = HarnessFleet()
        resource_manager: dict = {}
        mission_scheduler: dict = {}

        class Node:  # a node that carries its client, as standalone nodes do
            fleet_client = client

        sync = DataSynchronizer(Node(), resource_manager, mission_scheduler)
        assert sync.uavs is resource_manager and sync.missions is mission_scheduler
        await client.command({"type": "register_station", "station": "a"})
        resource_manager["uav_001"] = {"id": "uav_001", "home_station": "a", "battery": 80.0}
        assert (await sync.sync_uav("uav_001", "create"))["ok"]  # the record comes from the manager
        mission_scheduler["mission_001"] = {"id": "mission_001", "waypoints": [{"lat": 1.0, "lon": 2.0, "alt": 5.0}]}
        assert (await sync.sync_mission("mission_001", "create"))["ok"]
        await sync.sync_all_missions()
        await sync.sync_all_uavs()
        assert mission_scheduler["mission_001"]["status"] == "assigned"
        mission_scheduler["mission_001"]["status"] = "active"  # the station moves it on locally
        assert (await sync.sync_mission("mission_001", "update"))["ok"]  # as the spec writes it
        assert (await client.query("mission", {"id": "mission_001"}))["status"] == "active"
        with pytest.raises(KeyError, match="mission scheduler"):
            await sync.sync_mission("mission_404", "update")

        # Drift: a record lost locally, one changed behind the synchronizer's back, one made up.
        await sync.sync_all_uavs()
        del mission_scheduler["mission_001"]
        resource_manager["uav_001"] = {**resource_manager["uav_001"], "battery": 1.0}
        resource_manager["uav_ghost"] = {"id": "uav_ghost"}
        report = await sync.reconcile()
        assert report.added == {"mission": ["mission_001"]}
        assert report.removed == {"uav": ["uav_ghost"]}
        assert report.changed == {"uav": ["uav_001"]}
        assert report.repaired == 3 and sync.reconciliations[-1] is report
        assert resource_manager["uav_001"]["battery"] == 80.0 and "uav_ghost" not in resource_manager
        assert (await sync.reconcile()).repaired == 0

    asyncio.run(go())


def test_data_synchronizer_names_what_it_cannot_use():
    with pytest.raises(TypeError, match="SDK client"):
        DataSynchronizer(object())
    with pytest.raises(TypeError, match="resource_manager"):
        DataSynchronizer(HarnessFleet(), resource_manager=[])  # type: ignore[arg-type]
