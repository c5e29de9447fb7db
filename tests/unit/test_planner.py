import asyncio

import pytest

from controlplane.placement.embedded import EmbeddedRegistry, EmbeddedServiceDiscovery
from controlplane.placement.planner import STATION_SERVICE, Move, PlacementError, Planner, Station, plan


def stations(*names):
    return [Station(n, f"ray-{n}") for n in names]


def test_each_replica_gets_a_distinct_healthy_station():
    assignments, moves = plan([1, 2, 3], stations("a", "b", "c", "d"), {}, {}, grace=30)
    assert sorted(assignments.values()) == ["a", "b", "c"] and len(moves) == 3


def test_replicas_stay_through_a_short_outage_and_move_after_the_grace_period():
    current = {1: "a", 2: "b", 3: "c"}
    kept, moves = plan([1, 2, 3], stations("a", "b", "d"), current, {"c": 10.0}, grace=30)
    assert kept == current and moves == []
    moved, moves = plan([1, 2, 3], stations("a", "b", "d"), current, {"c": 31.0}, grace=30)
    assert moved == {1: "a", 2: "b", 3: "d"} and moves == [Move(3, "c", "d")]


def test_too_few_stations_is_a_clear_error():
    with pytest.raises(PlacementError, match="replica 3 needs a healthy station"):
        plan([1, 2, 3], stations("a", "b"), {}, {}, grace=30)


def test_stations_with_zero_capacity_get_nothing():
    assignments, _ = plan([1], [Station("full", capacity=0), Station("ok")], {}, {}, grace=30)
    assert assignments == {1: "ok"}


def test_planner_stores_the_map_with_cas_and_reacts_to_station_loss():
    async def go():
        registry = EmbeddedRegistry()
        now = [0.0]
        d = EmbeddedServiceDiscovery(registry, sweep_interval=0.05)
        for i, name in enumerate(["alpha", "bravo", "charlie", "delta"]):
            await d.register(name, "127.0.0.1", 9000 + i, {"ray_node_id": f"n{i}"}, service=STATION_SERVICE, ttl=2)
        p1 = Planner(d, "fleet", [1, 2, 3], grace=5, clock=lambda: now[0])
        p2 = Planner(d, "fleet", [1, 2, 3], grace=5, clock=lambda: now[0])
        first, moves = await p1.reconcile()
        assert sorted(first.values()) == ["alpha", "bravo", "charlie"] and len(moves) == 3
        assert await p2.reconcile() == (first, [])  # a second planner adopts the stored map
        victim_replica = next(r for r, s in first.items() if s == "charlie")
        d.stop_keepalive("charlie", service=STATION_SERVICE)
        deadline = asyncio.get_running_loop().time() + 10
        while "charlie" in [s.name for s in await p1.healthy_stations()]:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.1)
        now[0] = 1.0
        assert (await p1.reconcile())[1] == []  # inside the grace period: stay
        now[0] = 10.0
        after, moves = await p1.reconcile()
        assert moves == [Move(victim_replica, "charlie", "delta")]
        stored, _ = await p2.current()
        assert stored == after
        await d.close()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_racing_planners_cannot_both_win():
    async def go():
        d = EmbeddedServiceDiscovery(EmbeddedRegistry())
        for i, name in enumerate("abcdef"):
            await d.register(name, "127.0.0.1", 9100 + i, service=STATION_SERVICE)
        planners = [Planner(d, "g", [1, 2, 3]) for _ in range(4)]
        results = await asyncio.gather(*(p.reconcile() for p in planners))
        maps = {tuple(sorted(m.items())) for m, _ in results}
        assert len(maps) == 1  # everyone ends with the one stored map
        assert sum(1 for _, moves in results if moves) == 1
        await d.close()

    asyncio.run(go())


def test_a_corrupt_stored_map_is_reported():
    async def go():
        d = EmbeddedServiceDiscovery(EmbeddedRegistry())
        await d.kv_put("placement/g", b"{oops")
        with pytest.raises(PlacementError, match="corrupt"):
            await Planner(d, "g", [1]).reconcile()
        await d.close()

    asyncio.run(go())


class FleetStateClient:
    """The SDK's command/query over one FleetState, entries applied in order (what a group's
    leader does, without Raft): enough to test the map kept in the group's state."""

    def __init__(self):
        import json

        from controlplane.raft.messages import Entry
        from controlplane.state.fleet import FleetState, encode
        from controlplane.state.queries import run_query

        self.state, self.index = FleetState(), 0
        self._entry, self._encode, self._query, self._json = Entry, encode, run_query, json

    async def command(self, command):
        self.index += 1
        return self.state.apply(self._entry(1, self.index, self._encode(command)))

    async def query(self, name, args=None):
        return self._query(self.state, name, args)


class FixedStations:
    def __init__(self, *names):
        self.names = list(names)

    async def healthy_stations(self):
        return stations(*self.names)


def test_the_map_in_the_group_state_is_adopted_once_and_written_with_cas():
    from controlplane.placement.group_store import GroupStateStore

    async def go():
        store = GroupStateStore(FleetStateClient())
        source = FixedStations("a", "b", "c", "d")
        p1 = Planner(store, "g", [], grace=5, stations=source)
        assert await p1.adopt({1: "a", 2: "b", 3: "c"}) == {1: "a", 2: "b", 3: "c"} and p1.replicas == [1, 2, 3]
        p2 = Planner(store, "g", [], grace=5, stations=source)
        assert await p2.adopt({1: "d"}) == {1: "a", 2: "b", 3: "c"}  # the stored map wins
        _, version = await p1.current()
        assert await store.kv_cas("placement/g", b"{}", version - 1) is None  # stale: refused
        await p1.rename(3, 4)
        assert (await p2.current())[0] == {1: "a", 2: "b", 4: "c"} and p1.replicas == [1, 2, 4]

    asyncio.run(go())


def test_a_planner_without_discovery_needs_a_station_source():
    from controlplane.placement.group_store import GroupStateStore

    async def go():
        with pytest.raises(PlacementError, match="needs a station source"):
            await Planner(GroupStateStore(FleetStateClient()), "g", [1]).reconcile()

    asyncio.run(go())


def test_the_next_move_is_due_when_a_placed_station_reaches_the_grace_period():
    from controlplane.placement.group_store import GroupStateStore

    async def go():
        now = [0.0]
        source = FixedStations("a", "b", "c")
        p = Planner(GroupStateStore(FleetStateClient()), "g", [1, 2], grace=5, clock=lambda: now[0], stations=source)
        placement, _ = await p.reconcile()
        assert placement == {1: "a", 2: "b"} and p.seconds_to_next_move(placement) is None
        source.names = ["a", "c"]  # b is lost
        await p.reconcile()
        now[0] = 2.0
        assert p.seconds_to_next_move(placement) == 3.0 and p.unhealthy_for() == {"b": 2.0}
        now[0] = 9.0
        assert p.seconds_to_next_move(placement) == 0.0

    asyncio.run(go())


def test_a_move_is_recorded_before_it_starts_and_cleared_when_done():
    from controlplane.placement.group_store import GroupStateStore
    from controlplane.placement.planner import PendingMove

    async def go():
        now = [0.0]
        source = FixedStations("a", "b", "c", "d")
        store = GroupStateStore(FleetStateClient())
        p = Planner(store, "g", [], grace=5, clock=lambda: now[0], stations=source)
        await p.adopt({1: "a", 2: "b", 3: "c"})
        p.id_floor = 7  # ids up to 6 are taken by running actors
        source.names = ["a", "b", "d"]
        await p.reconcile()
        now[0] = 6.0
        placement, moves = await p.reconcile()
        assert moves == [Move(3, "c", "d")] and placement[3] == "d"
        assert await p.pending() == {3: PendingMove(7, "d", "c")}  # written with the map, in one CAS
        again = Planner(store, "g", [1, 2, 3], grace=5, stations=source)  # a restarted controller's
        assert await again.pending() == {3: PendingMove(7, "d", "c")}
        assert await again.begin_move(3, "b") == PendingMove(7, "d", "c")  # kept: one move per replica
        assert await again.begin_move(2, "b") == PendingMove(8, "b", "b")  # a lost disk: same station
        await again.rename(3, 7)
        stored, _ = await again.read()
        assert stored.assignments == {1: "a", 2: "b", 7: "d"} and set(stored.moving) == {2}
        await again.rename(2, 8)
        stored, _ = await again.read()
        assert stored.assignments == {1: "a", 7: "d", 8: "b"} and not stored.moving and stored.next_id == 9

    asyncio.run(go())


def test_a_map_stored_before_moves_were_recorded_still_reads():
    from controlplane.placement.planner import PlacementMap

    old = PlacementMap.from_json(b'{"group": "g", "assignments": {"1": "a", "4": "b"}}')
    assert old.assignments == {1: "a", 4: "b"} and not old.moving and old.free_id(1) == 5 and old.free_id(9) == 9
