"""PlacementStore: where a placement map is kept, written only with compare-and-set. Every
ServiceDiscovery is one (its KV); GroupStateStore keeps it in the group's own replicated
state when no Consul or etcd is configured."""

from __future__ import annotations

from typing import Protocol

from controlplane.placement.discovery import KVEntry


class PlacementStore(Protocol):
    async def kv_get(self, key: str) -> KVEntry | None: ...

    async def kv_cas(self, key: str, value: bytes, expected_version: int) -> KVEntry | None:
        """Write only if the key is at expected_version (0: absent); None when someone else
        wrote first."""
