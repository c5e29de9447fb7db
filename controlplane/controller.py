"""The reconcile loop that keeps a Raft group placed on healthy stations.

Stations are Ray nodes carrying a `station:<name>` resource (RayNodeStations) or the
healthy `uav-station` instances in discovery. Each pass asks the planner for the placement;
a replica whose station stayed unhealthy past the grace period is replaced through a
membership change (replace_replica), and the map is updated with compare-and-set. Each pass
is wrapped so one failure never kills the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import ray

from controlplane.actors import LostDiskError, deploy, replace_replica
from controlplane.metrics.ray_sink import RaySink
from controlplane.metrics.sink import MetricsSink
from controlplane.placement.discovery import ServiceDiscovery
from controlplane.placement.planner import Move, Planner, Station, StationSource

log = logging.getLogger(__name__)
STATION_PREFIX = "station:"


class RayNodeStations:
    """Healthy stations as Ray sees them: alive nodes with a station resource."""

    async def healthy_stations(self) -> list[Station]:
        stations = []
        for node in ray.nodes():  # type: ignore[no-untyped-call]
            if not node.get("Alive"):
                continue
            for resource in node.get("Resources", {}):
                if resource.startswith(STATION_PREFIX):
                    stations.append(Station(resource[len(STATION_PREFIX) :], node.get("NodeID", "")))
        return sorted(stations, key=lambda s: s.name)


class Controller:
    def __init__(
        self,
        group: str,
        replicas: int,
        data_root: str,
        discovery: ServiceDiscovery,
        *,
        stations: StationSource | None = None,
        grace: float = 30.0,
        transport: str = "http",
        cluster_token: str | None = None,
        http_host: str = "node-ip",
        metrics: MetricsSink | None = None,
    ) -> None:
        """metrics: where replacements are counted (controlplane_controller_replacements_total);
        Ray's metrics (RaySink) by default."""
        self.group = group
        sink = metrics if metrics is not None else RaySink()
        self._replacements = sink.counter(
            "controlplane_controller_replacements_total", "members replaced by the controller", ("group", "reason")
        )
        self.data_root = data_root
        self.transport = transport
        self._token = cluster_token
        self.http_host = http_host
        self.planner = Planner(discovery, group, list(range(1, replicas + 1)), grace, stations=stations)
        self.handles: dict[int, Any] = {}

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

    async def lost_disks(self) -> list[int]:
        """Replicas that came back without their data directory and refuse to serve."""
        lost = []
        for replica, handle in sorted(self.handles.items()):
            try:
                await asyncio.wait_for(handle.status.remote(), 10)
            except ray.exceptions.RayTaskError as exc:
                if isinstance(exc.cause, LostDiskError) or "refusing to rejoin" in str(exc):
                    lost.append(replica)
            except (ray.exceptions.RayActorError, TimeoutError):
                pass  # down or restarting: the station's health decides
        return lost

    async def reconcile_once(self) -> list[tuple[Move, int]]:
        """One pass: returns (move, new replica id) for each replaced member."""
        placement, moves = await self.planner.reconcile()
        for replica in await self.lost_disks():
            # Same station, new member: the old identity may not vote with a blank state.
            moves.append(Move(replica, placement[replica], placement[replica]))
        done = []
        for move in moves:
            if move.from_station is None or move.replica not in self.handles:
                continue
            new_id = await replace_replica(
                self.handles,
                self.group,
                move.replica,
                move.to_station,
                self.data_root,
            )
            await self.planner.rename(move.replica, new_id)
            reason = "lost_disk" if move.from_station == move.to_station else "station_lost"
            self._replacements.inc(1, {"group": self.group, "reason": reason})
            log.info("replica %d on %s replaced by %d on %s", move.replica, move.from_station, new_id, move.to_station)
            done.append((move, new_id))
        return done

    async def run(self, interval: float = 2.0, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await self.reconcile_once()
            except Exception:
                log.exception("placement reconcile failed; trying again in %.1fs", interval)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
