"""Where a standalone node's peers are: the founders PEER_NODES names, then whatever
discovery says (nodes register under their Raft id), kept current by a watch. Raft asks
`url_of(id)` for every message it sends, so a peer that moves is reached at its new address
as soon as discovery tells."""

from __future__ import annotations

import logging

from controlplane.node_ids import raft_id_of
from controlplane.placement.discovery import ServiceDiscovery, ServiceNode, Watch, WatchEvent
from controlplane.standalone.config import NodeConfig

log = logging.getLogger(__name__)


class PeerDirectory:
    def __init__(self, config: NodeConfig, discovery: ServiceDiscovery | None) -> None:
        self.config = config
        self.discovery = discovery
        self.urls: dict[int, str] = {p.raft_id: p.url for p in config.peers}
        self.names: dict[int, str] = {p.raft_id: p.name for p in config.peers}
        self.urls[config.raft_id] = config.url
        self.names[config.raft_id] = config.name
        self._watch: Watch | None = None

    def url_of(self, raft_id: int) -> str | None:
        """Where a member listens; None for one no one has told us of yet (its messages are
        dropped, and Raft resends them once discovery names it)."""
        return self.urls.get(raft_id)

    def _learn(self, node: ServiceNode) -> None:
        raft_id = raft_id_of(node.node_id)
        url = f"http://{node.address}:{node.port}"
        if self.urls.get(raft_id) != url:
            log.info("peer %s (raft id %d) is at %s", node.node_id, raft_id, url)
        self.urls[raft_id] = url
        self.names[raft_id] = node.node_id

    async def start(self) -> None:
        """Read discovery once and follow it. A node that leaves discovery keeps its last
        address: a lapsed registration (a slow station) must not cut a member off."""
        if self.discovery is None:
            return
        for node in await self.discovery.discover(self.config.service):
            self._learn(node)

        def changed(event: WatchEvent, node: ServiceNode) -> None:
            if event is not WatchEvent.REMOVED:
                self._learn(node)

        self._watch = await self.discovery.watch(changed, service=self.config.service)

    async def register(self) -> None:
        """Announce this node under its own address, with a TTL health check kept alive."""
        if self.discovery is None:
            return
        c = self.config
        meta = {"raft_id": str(c.raft_id), "api": f"http://{c.address}:{c.api_port}"}
        await self.discovery.register(c.name, c.address, c.port, meta, service=c.service, ttl=c.registration_ttl)

    async def close(self, *, deregister: bool) -> None:
        if self._watch is not None:
            await self._watch.cancel()
        if self.discovery is not None:
            if deregister:
                try:
                    await self.discovery.deregister(self.config.name, service=self.config.service)
                except Exception as exc:  # leaving anyway: its TTL lapses on its own
                    log.warning("could not deregister %s: %s", self.config.name, exc)
            await self.discovery.close()
