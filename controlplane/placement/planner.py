"""The placement planner: which station hosts each replica of a Raft group.

Stations register with discovery as service `uav-station` (meta: `ray_node_id`, optional
`capacity`) under a TTL check, or are Ray's station nodes (controller.RayNodeStations).
Each replica goes to a distinct healthy station. The map lives at `placement/<group>` in a
PlacementStore (the discovery KV, or the group's own replicated state) and is only ever
written with compare-and-set, so two planners racing cannot both win. A station that stays unhealthy
past the grace period loses its replica to another station; moving the Raft member itself
(add the new one as a learner, promote, remove the old) is the runtime's job.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from controlplane.placement.discovery import ServiceDiscovery
from controlplane.placement.store import PlacementStore

STATION_SERVICE = "uav-station"


class PlacementError(Exception):
    """No valid placement exists (too few healthy stations, a corrupt map...)."""


@dataclass(frozen=True)
class Station:
    name: str
    ray_node_id: str = ""
    capacity: int = 1
    address: str = ""  # where the station is reached (its Ray node's or its agent's address)


class StationSource(Protocol):
    async def healthy_stations(self) -> list[Station]: ...


class DiscoveryStations:
    """Stations as the healthy instances of the `uav-station` service."""

    def __init__(self, discovery: ServiceDiscovery) -> None:
        self.discovery = discovery

    async def healthy_stations(self) -> list[Station]:
        stations = []
        for n in await self.discovery.discover(STATION_SERVICE):
            try:
                capacity = int(n.meta.get("capacity", "1"))
            except ValueError:
                capacity = 0  # a station advertising nonsense gets no replica
            stations.append(Station(n.node_id, n.meta.get("ray_node_id", ""), capacity, n.address))
        return stations


@dataclass(frozen=True)
class Move:
    replica: int
    from_station: str | None
    to_station: str


def plan(
    replicas: list[int],
    healthy: list[Station],
    current: Mapping[int, str],
    unhealthy_for: Mapping[str, float],
    grace: float,
) -> tuple[dict[int, str], list[Move]]:
    """A deterministic placement: keep what may stay, move what must, fill what is new.

    A replica stays on its station while the station is healthy or has been unhealthy for
    less than `grace` seconds (a reboot should not trigger a membership change)."""
    if len(set(replicas)) != len(replicas):
        raise PlacementError(f"replica ids repeat: {replicas}")
    healthy_names = {s.name for s in healthy}
    result: dict[int, str] = {}
    for r in replicas:
        station = current.get(r)
        if station is None:
            continue
        if station in healthy_names or unhealthy_for.get(station, 0.0) < grace:
            result[r] = station
    used = set(result.values())
    free = sorted((s for s in healthy if s.name not in used and s.capacity > 0), key=lambda s: (-s.capacity, s.name))
    moves = []
    for r in sorted(replicas):
        if r in result:
            continue
        if not free:
            raise PlacementError(
                f"replica {r} needs a healthy station and none is free "
                f"(healthy: {sorted(healthy_names) or 'none'}, in use: {sorted(used)})"
            )
        target = free.pop(0)
        result[r] = target.name
        used.add(target.name)
        moves.append(Move(r, current.get(r), target.name))
    return result, moves


@dataclass(frozen=True)
class PendingMove:
    new: int  # the new member's replica id
    to: str  # its station
    from_station: str = ""  # where the replaced member ran (the same station: it lost its disk)


@dataclass(frozen=True)
class PlacementMap:
    """What is stored at placement/<group>: where each replica runs, and the moves begun and
    not finished (a replica -> its replacement), with the next free replica id."""

    assignments: Mapping[int, str]
    moving: Mapping[int, PendingMove] = field(default_factory=dict)
    next_id: int = 0  # 0: one above every id in the map

    def free_id(self, floor: int) -> int:
        used = [*self.assignments, *(m.new for m in self.moving.values()), 0]
        return max(self.next_id, max(used) + 1, floor)

    def with_assignments(self, assignments: Mapping[int, str]) -> PlacementMap:
        return PlacementMap(dict(assignments), self.moving, self.next_id)

    def with_pending(self, replica: int, station: str, floor: int, from_station: str) -> PlacementMap:
        if replica in self.moving:
            return self
        new = self.free_id(floor)
        moving = {**self.moving, replica: PendingMove(new, station, from_station)}
        return PlacementMap(self.assignments, moving, new + 1)

    def finished(self, old: int, new: int) -> PlacementMap:
        assignments = {r: s for r, s in self.assignments.items() if r != old}
        station = self.assignments.get(old) or self.moving[old].to
        assignments[new] = station
        moving = {r: m for r, m in self.moving.items() if r != old}
        return PlacementMap(assignments, moving, max(self.next_id, new + 1))

    def to_json(self, group: str) -> bytes:
        return json.dumps(
            {
                "group": group,
                "assignments": {str(k): v for k, v in sorted(self.assignments.items())},
                "moving": {
                    str(k): {"new": m.new, "to": m.to, "from": m.from_station} for k, m in sorted(self.moving.items())
                },
                "next_id": self.next_id,
            }
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> PlacementMap:
        raw = json.loads(data)
        assignments = {int(k): str(v) for k, v in raw["assignments"].items()}
        moving = {
            int(k): PendingMove(int(m["new"]), str(m["to"]), str(m.get("from", "")))
            for k, m in raw.get("moving", {}).items()
        }
        return cls(assignments, moving, int(raw.get("next_id", 0)))


@dataclass
class Planner:
    store: PlacementStore
    group: str
    replicas: list[int]
    grace: float = 30.0
    clock: Callable[[], float] = time.monotonic
    stations: StationSource | None = None  # default: the `uav-station` service when store is a discovery
    _unhealthy_since: dict[str, float] = field(default_factory=dict)
    _known: set[str] = field(default_factory=set)
    last_healthy: list[Station] = field(default_factory=list)  # as of the last pass
    id_floor: int = 1  # new members get ids from here up (the caller knows which ids exist)

    def unhealthy_for(self) -> dict[str, float]:
        """Seconds each known station has been unhealthy (as of now), by name."""
        now = self.clock()
        return {name: now - since for name, since in sorted(self._unhealthy_since.items())}

    @property
    def key(self) -> str:
        return f"placement/{self.group}"

    async def healthy_stations(self) -> list[Station]:
        if self.stations is not None:
            return await self.stations.healthy_stations()
        if not isinstance(self.store, ServiceDiscovery):
            raise PlacementError("a planner whose map is not kept in discovery needs a station source")
        return await DiscoveryStations(self.store).healthy_stations()

    def seconds_to_next_move(self, placement: Mapping[int, str]) -> float | None:
        """How long until a station of `placement` that is down reaches the grace period (its
        member may move then); None when none is down."""
        down = self.unhealthy_for()
        waits = [self.grace - down[s] for s in set(placement.values()) if s in down]
        return max(0.0, min(waits)) if waits else None

    async def current(self) -> tuple[dict[int, str], int]:
        stored, version = await self.read()
        return dict(stored.assignments), version

    async def read(self) -> tuple[PlacementMap, int]:
        """The stored map (empty when none) and its version."""
        entry = await self.store.kv_get(self.key)
        if entry is None:
            return PlacementMap({}), 0
        try:
            return PlacementMap.from_json(entry.value), entry.version
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PlacementError(f"placement map at {self.key!r} is corrupt: {exc}") from None

    async def reconcile(self, attempts: int = 5) -> tuple[dict[int, str], list[Move]]:
        """Bring the stored map in line with station health; returns (map, moves made). Each
        move of a placed replica is recorded in the same write as pending (the new member's
        id and station), so a controller that restarts half-way resumes it."""
        for _ in range(attempts):
            healthy = self.last_healthy = await self.healthy_stations()
            now = self.clock()
            healthy_names = {s.name for s in healthy}
            stored, version = await self.read()
            current = dict(stored.assignments)
            self._known |= healthy_names | set(current.values())
            for name in self._known:
                if name in healthy_names:
                    self._unhealthy_since.pop(name, None)
                else:
                    self._unhealthy_since.setdefault(name, now)
            unhealthy_for = {n: now - t for n, t in self._unhealthy_since.items()}
            assignments, moves = plan(self.replicas, healthy, current, unhealthy_for, self.grace)
            if assignments == current:
                return current, []
            updated = stored.with_assignments(assignments)
            for move in moves:
                if move.from_station is not None:
                    updated = updated.with_pending(move.replica, move.to_station, self.id_floor, move.from_station)
            if await self._write(updated, version):
                return assignments, moves
            # Another planner wrote first: re-read and decide again.
        raise PlacementError(f"placement map for {self.group!r} kept changing under us ({attempts} attempts)")

    async def begin_move(self, replica: int, station: str, attempts: int = 5) -> PendingMove:
        """Record that `replica` is to be replaced by a new member on `station` (kept if one is
        recorded already): the new member's id, before anything is started."""
        for _ in range(attempts):
            stored, version = await self.read()
            if replica in stored.moving:
                return stored.moving[replica]
            updated = stored.with_pending(replica, station, self.id_floor, stored.assignments.get(replica, station))
            if await self._write(updated, version):
                return updated.moving[replica]
        raise PlacementError(f"could not record the move of replica {replica} ({attempts} attempts)")

    async def pending(self) -> dict[int, PendingMove]:
        """Moves recorded and not finished: replica -> (new member, station)."""
        stored, _ = await self.read()
        return dict(stored.moving)

    async def adopt(self, assignments: Mapping[int, str], attempts: int = 5) -> dict[int, str]:
        """The stored map, or `assignments` (where a deployment put the replicas) stored as the
        first one; from then on the planner places the replicas the map names."""
        for _ in range(attempts):
            stored, version = await self.read()
            current = dict(stored.assignments)
            if not current and await self._write(PlacementMap(dict(assignments)), version):
                current = dict(assignments)
            if current:
                self.replicas = sorted(current)
                return current
        raise PlacementError(f"could not store the first placement map of {self.group!r} ({attempts} attempts)")

    async def _write(self, stored: PlacementMap, version: int) -> bool:
        body = stored.to_json(self.group)
        return await self.store.kv_cas(self.key, body, version) is not None

    async def rename(self, old: int, new: int, attempts: int = 5) -> None:
        """Record that replica `new` replaced `old` on the same station (the move is done)."""
        for _ in range(attempts):
            stored, version = await self.read()
            if old not in stored.assignments and old not in stored.moving:
                return
            if await self._write(stored.finished(old, new), version):
                self.replicas = sorted({new if r == old else r for r in self.replicas} | {new})
                return
        raise PlacementError(f"could not record replica {new} replacing {old} ({attempts} attempts)")
