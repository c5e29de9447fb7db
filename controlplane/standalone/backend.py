"""The HTTP API's backend inside a standalone node: reads from the node's own replica (a
ReadIndex barrier makes a follower's read linearizable), commands and telemetry to the
leader (the local replica when it leads, else over the peer port), the change feed from
the local replica."""

from __future__ import annotations

from typing import Any

from controlplane.leader_client import RetryElsewhere
from controlplane.node_client import NodeGroup
from controlplane.raft import RaftError
from controlplane.replica import Replica
from controlplane.standalone.peers import PeerDirectory
from controlplane.sync.ingest import TelemetryIngest


class NodeFleetBackend(NodeGroup):
    def __init__(self, replica: Replica, peers: PeerDirectory, token: str | None) -> None:
        super().__init__(lambda: {r: peers.urls[r] for r in self._members() if r in peers.urls}, token=token)
        self.replica = replica
        self.peers = peers
        self._ingests: dict[str, TelemetryIngest] = {}

    def _members(self) -> list[int]:
        conf = self.replica.node.status().conf
        return sorted({*conf.voters, *conf.learners})

    async def _leader(self, timeout: float) -> str:
        leader = self.replica.node.status().leader_id
        url = self.peers.url_of(leader) if leader else None
        if url is None:
            raise RetryElsewhere(f"no leader known yet (leader id {leader}: an election, or an address not yet found)")
        return url

    async def _propose_once(self, data: bytes, timeout: float) -> tuple[str, Any]:
        if self.replica.node.is_leader:
            return (await self.replica.propose_many([data], min(timeout, 5.0)))[0]
        return await super()._propose_once(data, timeout)

    async def _query_once(self, name: str, args: dict[str, Any] | None, timeout: float) -> Any:
        try:
            return await self.replica.query(name, args, "linearizable")
        except (RaftError, TimeoutError) as exc:
            raise RetryElsewhere(f"{type(exc).__name__}: {exc}") from exc

    async def query(
        self, name: str, args: dict[str, Any] | None = None, consistency: str = "linearizable", timeout: float = 15.0
    ) -> Any:
        if consistency == "stale":
            return await self.replica.query(name, args, "stale")
        return await super().query(name, args, consistency, timeout)

    async def watch(self, from_index: int, kinds: list[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        return await self.replica.watch(from_index, kinds, timeout)

    async def report(self, station: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        ingest = self._ingests.get(station)
        if ingest is None:
            ingest = self._ingests[station] = TelemetryIngest(station, self._forward_segment)
        return await ingest.report(reports, wait=True)

    async def _forward_segment(self, segment: bytes, rows: int) -> Any:
        if self.replica.node.is_leader:
            return (await self.replica.submit_segments([segment]))[0]
        return await self.submit_segment(segment)
