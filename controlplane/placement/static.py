"""Static discovery: the peers are fixed by configuration (PEER_NODES, a JSON list of
{"node_id", "address", "port"[, "meta"][, "service"]}). Registration of a listed node is
accepted; anything else is refused. The KV is local to this process."""

from __future__ import annotations

import json
from collections.abc import Mapping

from controlplane.placement.discovery import DiscoveryError, ServiceNode, validate_registration
from controlplane.placement.embedded import EmbeddedRegistry, EmbeddedServiceDiscovery


class StaticServiceDiscovery(EmbeddedServiceDiscovery):
    def __init__(self, nodes: list[ServiceNode]) -> None:
        super().__init__(EmbeddedRegistry(clock=lambda: 0.0))  # static nodes never expire
        self.static = {(n.service, n.node_id): n for n in nodes}
        for n in nodes:
            self.registry.nodes[(n.service, n.node_id)] = (n, float("inf"))

    @classmethod
    def from_json(cls, text: str) -> StaticServiceDiscovery:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DiscoveryError(f"PEER_NODES is not valid JSON: {exc}") from None
        if not isinstance(raw, list) or not raw:
            raise DiscoveryError("PEER_NODES must be a non-empty JSON list of nodes")
        nodes = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise DiscoveryError(f"PEER_NODES[{i}] must be an object, got {type(item).__name__}")
            missing = [k for k in ("node_id", "address", "port") if k not in item]
            if missing:
                raise DiscoveryError(f"PEER_NODES[{i}] is missing {', '.join(missing)}")
            try:
                validate_registration(str(item["node_id"]), str(item["address"]), item["port"], 10.0)
            except ValueError as exc:
                raise DiscoveryError(f"PEER_NODES[{i}]: {exc}") from None
            nodes.append(
                ServiceNode(
                    str(item.get("service", "raft-node")),
                    str(item["node_id"]),
                    str(item["address"]),
                    int(item["port"]),
                    {str(k): str(v) for k, v in dict(item.get("meta", {})).items()},
                )
            )
        ids = [(n.service, n.node_id) for n in nodes]
        if len(set(ids)) != len(ids):
            raise DiscoveryError("PEER_NODES lists a node_id twice")
        return cls(nodes)

    async def register(
        self,
        node_id: str,
        address: str,
        port: int,
        meta: Mapping[str, str] | None = None,
        *,
        service: str = "raft-node",
        ttl: float = 10.0,
    ) -> None:
        listed = self.static.get((service, node_id))
        if listed is None or (listed.address, listed.port) != (address, port):
            raise DiscoveryError(f"{service}/{node_id} at {address}:{port} is not in PEER_NODES")
