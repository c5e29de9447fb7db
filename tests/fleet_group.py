"""An in-process fleet group for tests without Ray: commands go through a 3-replica Raft
harness (controlplane.raft.harness) into FleetStates behind ChangeFeeds. It speaks the
SDK's surface (command, query, watch, status, checkpoint_digests) and the API backend's
(report: telemetry through a TelemetryIngest whose segments become log entries)."""

from __future__ import annotations

from typing import Any

from controlplane.raft.harness import Network
from controlplane.raft.messages import EntryKind
from controlplane.session import ClientSession, keyed_command
from controlplane.state.fleet import FleetState
from controlplane.state.queries import run_query
from controlplane.state.telemetry import join_segments
from controlplane.sync.changefeed import ChangeFeed
from controlplane.sync.coalescer import CoalescerConfig
from controlplane.sync.ingest import TelemetryIngest


class HarnessFleet:
    def __init__(self, seed: int = 7, auto_register: bool = True) -> None:
        self.net = Network(3, seed=seed)
        self.net.elect(1)
        self.feeds = {nid: ChangeFeed(FleetState()) for nid in self.net.replicas}
        self.applied = dict.fromkeys(self.net.replicas, 0)
        self.session = ClientSession()
        self.auto_register = auto_register
        self._ingests: dict[str, TelemetryIngest] = {}

    def _sync(self) -> dict[int, Any]:
        self.net.settle()
        self.net.heartbeat()
        answers = {}
        for nid, replica in self.net.replicas.items():
            for e in replica.core.log.entries:
                if self.applied[nid] < e.index <= replica.core.log.committed:
                    if e.kind is EntryKind.NORMAL and e.data:
                        answers[e.index] = self.feeds[nid].apply(e)
                    self.applied[nid] = e.index
        return answers

    async def _propose_async(self, data: bytes) -> dict[str, Any]:
        return self.propose(data)

    def propose(self, data: bytes) -> dict[str, Any]:
        index = self.net.core(1).propose(data).index
        answer: dict[str, Any] = self._sync()[index]
        return answer

    async def command(
        self, command: dict[str, Any], timeout: float = 5, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        if idempotency_key is not None:
            return self.propose(keyed_command(command, idempotency_key))
        await self.session.ensure_open(self._propose_async)
        seq, data = self.session.command(command)
        answer = self.propose(data)
        self.session.done(seq, answer)
        return answer

    async def query(self, name: str, args: Any = None, consistency: str = "linearizable", timeout: float = 5) -> Any:
        return run_query(self.feeds[1].state, name, args)

    async def watch(self, from_index: int, kinds: Any = None, timeout: float = 5) -> dict[str, Any]:
        return await self.feeds[1].wait(from_index, kinds, min(timeout, 0.05))

    async def status(self) -> list[dict[str, Any]]:
        out = []
        for nid, replica in self.net.replicas.items():
            s = replica.core.status()
            out.append({"replica": nid, "role": s.role.value, "term": s.term, "commit": s.commit, "applied": s.applied})
        return out

    async def checkpoint_digests(self, index: int) -> dict[str, dict[str, str] | None]:
        return {str(n): f.state.checkpoints.get(index) for n, f in self.feeds.items()}

    async def report(self, station: str, reports: list[dict[str, Any]]) -> dict[str, Any]:
        ingest = self._ingests.get(station)
        if ingest is None:

            async def forward(segment: bytes, rows: int) -> list[dict[str, Any]]:
                return [self.propose(join_segments([segment], auto_register=self.auto_register))]

            ingest = self._ingests[station] = TelemetryIngest(station, forward, CoalescerConfig(max_delay=0.0))
        return await ingest.report(reports, wait=True)
