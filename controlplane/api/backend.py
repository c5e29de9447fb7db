"""FleetBackend: what the HTTP API needs from the cluster. client.ControlPlane (plus a
station's ingest actor for telemetry) is the Ray one: it always reaches the leader, so a
request sent to any station's API is forwarded, never refused."""

from __future__ import annotations

from typing import Any, Protocol

from controlplane.sync.synchronizer import FleetClient


class FleetBackend(FleetClient, Protocol):
    """The SDK's surface (command, query, watch, checkpoint_digests) plus these two."""

    async def status(self) -> list[dict[str, Any]]: ...

    async def report(self, station: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        """Telemetry through `station`'s ingest; answers once applied (with counts)."""


class RayFleetBackend:
    """The SDK for commands and queries; the station's ingest actor for telemetry."""

    def __init__(self, group: str) -> None:
        from controlplane.client import ControlPlane
        from controlplane.ray_group import group_replicas

        self.cp = ControlPlane(group, group_replicas(group))
        self.group = group
        self.command = self.cp.command
        self.query = self.cp.query
        self.watch = self.cp.watch
        self.status = self.cp.status
        self.checkpoint_digests = self.cp.checkpoint_digests

    async def report(self, station: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        import ray

        from controlplane.actors import start_ingest
        from controlplane.state.model import NotFoundError

        resource = f"station:{station}"
        if not any(n.get("Alive") and resource in n.get("Resources", {}) for n in ray.nodes()):  # type: ignore[no-untyped-call]
            # Its ingest actor could never be placed: say so instead of waiting forever.
            raise NotFoundError("station", f"no live Ray node offers {resource!r}")
        answer: dict[str, Any] = await start_ingest(self.group, station).report.remote(reports, wait=True)
        return answer
