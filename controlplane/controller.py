"""The reconcile loop that keeps a Raft group placed on healthy stations.

Stations are Ray nodes carrying a `station:<name>` resource (RayNodeStations) or the
healthy `uav-station` instances in discovery. Each pass asks the planner for the placement;
a replica whose station stayed unhealthy past the grace period is replaced through a
membership change (replace_replica), and the map is updated with compare-and-set. Each pass
is wrapped so one failure never kills the loop. controller_actor.py runs it as a detached
actor in every deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from typing import Any

import ray

from controlplane.actors import LostDiskError, deploy, replace_replica
from controlplane.metrics.ray_sink import RaySink
from controlplane.metrics.sink import MetricsSink
from controlplane.placement.planner import Move, Planner, Station, StationSource
from controlplane.placement.store import PlacementStore

log = logging.getLogger(__name__)
STATION_PREFIX = "station:"
LOST_DISK_WAIT = 1.0  # seconds a pass waits for the replicas' answers to "do you refuse to serve?"


class RayNodeStations:
    """Healthy stations as Ray sees them: alive nodes with a station resource."""

    async def healthy_stations(self) -> list[Station]:
        stations = []
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            if not node.get("Alive"):
                continue
            for resource in node.get("Resources", {}):
                if resource.startswith(STATION_PREFIX):
                    name = resource[len(STATION_PREFIX) :]
                    stations.append(Station(name, node.get("NodeID", ""), address=node.get("NodeManagerAddress", "")))
        return sorted(stations, key=lambda s: s.name)


class Controller:
    def __init__(
        self,
        group: str,
        replicas: int,
        data_root: str,
        store: PlacementStore,
        *,
        stations: StationSource | None = None,
        grace: float = 30.0,
        transport: str = "http",
        cluster_token: str | None = None,
        http_host: str = "node-ip",
        metrics: MetricsSink | None = None,
    ) -> None:
        """store: where the placement map is kept (a discovery backend's KV, or the group's
        own state); metrics: where replacements are counted
        (controlplane_controller_replacements_total), Ray's metrics (RaySink) by default."""
        if grace < 0:
            raise ValueError(f"grace must be at least 0 seconds, got {grace}")
        self.group = group
        sink = metrics if metrics is not None else RaySink()
        self._replacements = sink.counter(
            "controlplane_controller_replacements_total", "members replaced by the controller", ("group", "reason")
        )
        self.data_root = data_root
        self.transport = transport
        self._token = cluster_token
        self.http_host = http_host
        self.planner = Planner(store, group, list(range(1, replicas + 1)), grace, stations=stations)
        self.handles: dict[int, Any] = {}
        self.replaced: list[dict[str, Any]] = []  # what this controller did, newest last
        self.last_pass: dict[str, Any] = {}
        self.placement: dict[int, str] = {}  # as of the last pass
        self._disk_questions: dict[int, asyncio.Future[bool]] = {}  # replica -> its status call, still open

    async def deploy(self) -> dict[int, Any]:
        """Place the founders on distinct healthy stations and start them (idempotent)."""
        placement, _ = await self.planner.reconcile()
        stations = [placement[r] for r in sorted(placement)]
        self.handles = deploy(
            self.group,
            stations,
            self.data_root,
            transport=self.transport,
            cluster_token=self._token,
            http_host=self.http_host,
        )
        return self.handles

    async def adopt(self, handles: dict[int, Any], placement: Mapping[int, str]) -> dict[int, str]:
        """Take over a group that already runs: `placement` (replica -> station, where it was
        deployed) becomes the map unless one is stored already, which wins."""
        self.handles = handles
        return await self.planner.adopt(placement)

    async def lost_disks(self, placement: Mapping[int, str], moving: set[int]) -> list[int]:
        """Replicas on healthy stations that came back without their data directory and
        refuse to serve (a replica on a lost station is the planner's to move: `moving`).
        A pass waits at most LOST_DISK_WAIT for the answers: a replica that does not answer
        (a station lost but not yet noticed, a replica restoring) must not hold up the pass
        that notices a lost station. Its question stays open; a later pass takes the answer."""
        healthy = {s.name for s in self.planner.last_healthy}
        asked = [r for r in sorted(self.handles) if placement.get(r) in healthy and r not in moving]
        for replica in set(self._disk_questions) - set(asked):
            self._disk_questions.pop(replica).cancel()
        for replica in asked:
            if replica not in self._disk_questions:
                self._disk_questions[replica] = asyncio.ensure_future(self._refuses(replica))
        if asked:
            await asyncio.wait([self._disk_questions[r] for r in asked], timeout=LOST_DISK_WAIT)
        lost = []
        for replica in asked:
            question = self._disk_questions[replica]
            if question.done():
                del self._disk_questions[replica]
                if question.result():
                    lost.append(replica)
        return lost

    async def _refuses(self, replica: int) -> bool:
        try:
            await asyncio.wait_for(self.handles[replica].status.remote(), 5)
        except ray.exceptions.RayTaskError as exc:
            return isinstance(exc.cause, LostDiskError) or "refusing to rejoin" in str(exc)
        except (ray.exceptions.RayActorError, TimeoutError):
            pass  # down or restarting: the station's health decides
        return False

    async def reconcile_once(self) -> list[tuple[Move, int]]:
        """One pass: returns (move, new replica id) for each replaced member. Every move is
        recorded in the map before it starts (planner.PendingMove) and resumed from there
        by the next pass, also a restarted controller's."""
        self.planner.id_floor = max(self.handles, default=0) + 1  # never reuse a running actor's id
        placement, _ = await self.planner.reconcile()
        self.placement = placement
        pending = await self.planner.pending()
        for replica in await self.lost_disks(placement, set(pending)):
            # Same station, new member: the old identity may not vote with a blank state.
            pending[replica] = await self.planner.begin_move(replica, placement[replica])
        done = []
        for old, move in sorted(pending.items()):
            down_for = self.planner.unhealthy_for().get(move.from_station, 0.0)
            started = time.monotonic()
            new_id = await replace_replica(self.handles, self.group, old, move.to, self.data_root, new_id=move.new)
            await self.planner.rename(old, new_id)
            reason = "lost_disk" if move.from_station == move.to else "station_lost"
            self._replacements.inc(1, {"group": self.group, "reason": reason})
            log.info("replica %d on %s replaced by %d on %s", old, move.from_station, new_id, move.to)
            self.replaced.append(
                {"at": time.time(), "old": old, "new": new_id, "from": move.from_station, "to": move.to,
                 "reason": reason,
                 # seen down this long when the move began (the grace period, plus up to a pass),
                 # and how long the membership change took
                 "down_for": round(down_for, 2), "took": round(time.monotonic() - started, 2)}
            )  # fmt: skip
            done.append((Move(old, move.from_station, move.to), new_id))
        return done

    async def run(self, interval: float = 1.0, stop: asyncio.Event | None = None) -> None:
        """Reconcile every `interval` seconds, and also the moment a lost station's grace
        period ends (not up to an interval later)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            started = time.time()
            wait = interval
            try:
                await self.reconcile_once()
                self.last_pass = {"at": started, "ok": True, "took": round(time.time() - started, 3)}
                due = self.planner.seconds_to_next_move(self.placement)
                if due is not None:
                    wait = min(interval, due + 0.05)
            except Exception as exc:
                log.exception("placement reconcile failed; trying again in %.1fs", interval)
                self.last_pass = {"at": started, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)

    async def report(self) -> dict[str, Any]:
        """The map and each known station's health, as `controlplane status` shows them."""
        placement, version = await self.planner.current()
        healthy = {s.name: s for s in self.planner.last_healthy}
        down = self.planner.unhealthy_for()
        stations = []
        for name in sorted(set(healthy) | set(down) | set(placement.values())):
            replicas = [r for r, s in sorted(placement.items()) if s == name]
            row: dict[str, Any] = {"station": name, "healthy": name in healthy, "replicas": replicas}
            row["address"] = healthy[name].address if name in healthy else ""
            row["unhealthy_for"] = round(down[name], 1) if name in down else None
            stations.append(row)
        return {
            "group": self.group,
            "placement": {str(r): s for r, s in sorted(placement.items())},
            "map_version": version,
            "grace": self.planner.grace,
            "stations": stations,
            "replaced": self.replaced[-20:],
            "last_pass": self.last_pass,
        }
