"""The controller as a named, detached, always-restarted Ray actor (`controller-<group>`),
started by `jobs.deploy` in every deployment.

It keeps nothing of its own: on every (re)start it finds the group's replicas by name, reads
the placement map from where it lives (the discovery KV when Consul or etcd is configured,
else the group's own replicated state), and goes on reconciling. Stations are the healthy
`uav-station` instances in discovery (the station agents) with Consul or etcd, else Ray's
station nodes. Its loop starts by itself after a restart: the constructor queues a call to
the actor's own `start`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from controlplane.controller import Controller, RayNodeStations
from controlplane.placement.discovery import ServiceDiscovery, create_service_discovery, is_shared
from controlplane.placement.planner import DiscoveryStations, StationSource
from controlplane.placement.store import PlacementStore
from controlplane.ray_group import NAMESPACE, group_replicas

log = logging.getLogger(__name__)
HEAD_RESOURCE = "node:__internal_head__"


def controller_name(group: str) -> str:
    return f"controller-{group}"


class ControllerService:
    def __init__(
        self,
        group: str,
        data_root: str,
        placement: dict[int, str],
        discovery_env: dict[str, str] | None = None,
        *,
        grace: float = 30.0,
        interval: float = 1.0,
    ) -> None:
        """placement: where `jobs.deploy` put the replicas (the first map, unless one is
        stored); discovery_env: DISCOVERY_TYPE and its settings (empty: embedded)."""
        if interval <= 0:
            raise ValueError(f"interval must be positive, got {interval}")
        self.group = group
        self.data_root = data_root
        self.placement = dict(placement)
        self.discovery_env = dict(discovery_env or {})
        self.grace = grace
        self.interval = interval
        self.controller: Controller | None = None
        self.discovery: ServiceDiscovery | None = None
        self.build_error = ""
        self._loop_task: asyncio.Task[None] | None = None
        self.started_at = 0.0
        with_handle = ray.get_runtime_context().current_actor
        with_handle.start.remote()  # runs once the constructor returns, also after every restart

    async def start(self) -> dict[str, Any]:
        """Idempotent: the first call starts the loop (which builds the controller, retrying
        until the group answers)."""
        if self._loop_task is None:
            self.started_at = time.time()
            self._loop_task = asyncio.get_running_loop().create_task(self._run())
        return await self.status()

    async def _run(self) -> None:
        while self.controller is None:
            try:
                self.controller = await self._build()
            except Exception as exc:
                self.build_error = f"{type(exc).__name__}: {exc}"
                log.warning("controller of %r not ready (%s); trying again", self.group, self.build_error)
                await asyncio.sleep(self.interval)
        log.info("controller of %r started (grace %.1fs)", self.group, self.grace)
        await self.controller.run(self.interval)

    async def _build(self) -> Controller:
        handles = group_replicas(self.group)
        if not handles:
            raise RuntimeError(f"group {self.group!r} has no replicas to control; deploy it first")
        stations: StationSource
        store: PlacementStore
        if is_shared(self.discovery_env):
            self.discovery = create_service_discovery(self.discovery_env)
            store, stations = self.discovery, DiscoveryStations(self.discovery)
        else:
            from controlplane.client import ControlPlane
            from controlplane.placement.group_store import GroupStateStore

            store, stations = GroupStateStore(ControlPlane(self.group, handles)), RayNodeStations()
        controller = Controller(self.group, len(handles), self.data_root, store, stations=stations, grace=self.grace)
        await controller.adopt(handles, self.placement)
        return controller

    async def status(self) -> dict[str, Any]:
        if self.controller is None:
            return {"group": self.group, "started": False, "started_at": self.started_at, "error": self.build_error}
        report = await self.controller.report()
        report["started"] = True
        report["started_at"] = self.started_at  # which instance answers: Ray restarts it
        report["discovery"] = self.discovery_env.get("DISCOVERY_TYPE") or "group state"
        if self._loop_task is not None and self._loop_task.done():
            report["loop"] = "stopped"  # should not happen: run() catches every pass's failure
        return report


ControllerActor = ray.remote(ControllerService)


def start_controller(
    group: str,
    data_root: str,
    placement: dict[int, str],
    discovery_env: dict[str, str] | None = None,
    *,
    grace: float = 30.0,
    interval: float = 1.0,
) -> Any:
    """Create (or find) the group's controller, on the head node while it lives (a station
    lost with the controller on it would restart the grace period); Ray restarts it wherever
    a node is left."""
    nodes = ray.nodes()  # type: ignore[no-untyped-call]
    head = next((n["NodeID"] for n in nodes if n.get("Alive") and HEAD_RESOURCE in n.get("Resources", {})), None)
    on_head: dict[str, Any] = {}
    if head is not None:
        on_head["scheduling_strategy"] = NodeAffinitySchedulingStrategy(head, soft=True)
    return ControllerActor.options(
        name=controller_name(group),
        namespace=NAMESPACE,
        lifetime="detached",
        max_restarts=-1,
        max_task_retries=0,
        num_cpus=0.01,  # Ray ignores placement hints for actors asking for none
        get_if_exists=True,
        **on_head,
    ).remote(group, data_root, placement, discovery_env, grace=grace, interval=interval)


def find_controller(group: str) -> Any | None:
    try:
        return ray.get_actor(controller_name(group), namespace=NAMESPACE)
    except ValueError:
        return None
