"""Embedded discovery: no external service. A registry shared by every client in this
process (one per Ray actor process, or per test), with TTL health and a versioned KV.
Registrations are kept alive by the registering client until it deregisters or closes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping

from controlplane.placement.discovery import (
    KVCallback,
    KVEntry,
    NodeCallback,
    ServiceDiscovery,
    ServiceNode,
    Watch,
    WatchEvent,
    call_back,
    validate_registration,
)


class EmbeddedRegistry:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.nodes: dict[tuple[str, str], tuple[ServiceNode, float]] = {}  # -> (node, expires)
        self.kv: dict[str, KVEntry] = {}
        self.version = 0
        self.node_watchers: list[tuple[str, NodeCallback]] = []
        self.kv_watchers: list[tuple[str, KVCallback]] = []

    async def _notify_nodes(self, event: WatchEvent, node: ServiceNode) -> None:
        for service, cb in list(self.node_watchers):
            if service == node.service:
                await call_back(cb, event, node)

    async def _notify_kv(self, key: str, entry: KVEntry | None) -> None:
        for prefix, cb in list(self.kv_watchers):
            if key.startswith(prefix):
                await call_back(cb, key, entry)

    async def upsert(self, node: ServiceNode, ttl: float) -> None:
        key = (node.service, node.node_id)
        old = self.nodes.get(key)
        self.nodes[key] = (node, self.clock() + ttl)
        if old is None or old[0] != node:
            await self._notify_nodes(WatchEvent.ADDED if old is None else WatchEvent.UPDATED, node)

    async def remove(self, service: str, node_id: str) -> None:
        old = self.nodes.pop((service, node_id), None)
        if old is not None:
            await self._notify_nodes(WatchEvent.REMOVED, old[0])

    async def expire(self) -> None:
        now = self.clock()
        for key, (_node, expires) in list(self.nodes.items()):
            if expires <= now:
                await self.remove(*key)

    def refresh(self, service: str, node_id: str, ttl: float) -> None:
        current = self.nodes.get((service, node_id))
        if current is not None:
            self.nodes[(service, node_id)] = (current[0], self.clock() + ttl)

    async def write(self, key: str, value: bytes | None) -> KVEntry | None:
        self.version += 1
        entry = None if value is None else KVEntry(key, value, self.version)
        if entry is None:
            self.kv.pop(key, None)
        else:
            self.kv[key] = entry
        await self._notify_kv(key, entry)
        return entry


_SHARED = EmbeddedRegistry()


class _ListWatch(Watch):
    def __init__(self, items: list[tuple[str, object]], item: tuple[str, object]) -> None:
        self.items, self.item = items, item

    async def cancel(self) -> None:
        with contextlib.suppress(ValueError):
            self.items.remove(self.item)


class EmbeddedServiceDiscovery(ServiceDiscovery):
    def __init__(self, registry: EmbeddedRegistry | None = None, sweep_interval: float = 0.5) -> None:
        self.registry = registry or _SHARED
        self.sweep_interval = sweep_interval
        self._keepalives: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            await self.registry.expire()

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
        validate_registration(node_id, address, port, ttl)
        self._ensure_sweeper()
        await self.registry.upsert(ServiceNode(service, node_id, address, port, dict(meta or {})), ttl)
        key = (service, node_id)
        old = self._keepalives.pop(key, None)
        if old is not None:
            old.cancel()

        async def keepalive() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                self.registry.refresh(service, node_id, ttl)

        self._keepalives[key] = asyncio.get_running_loop().create_task(keepalive())

    async def deregister(self, node_id: str, *, service: str = "raft-node") -> None:
        task = self._keepalives.pop((service, node_id), None)
        if task is not None:
            task.cancel()
        await self.registry.remove(service, node_id)

    def stop_keepalive(self, node_id: str, *, service: str = "raft-node") -> None:
        """Stop renewing a registration without removing it (as a crashed process would)."""
        task = self._keepalives.pop((service, node_id), None)
        if task is not None:
            task.cancel()

    async def discover(self, service: str = "raft-node") -> list[ServiceNode]:
        await self.registry.expire()
        return sorted((n for (s, _), (n, _) in self.registry.nodes.items() if s == service), key=lambda n: n.node_id)

    async def watch(self, callback: NodeCallback, *, service: str = "raft-node") -> Watch:
        self._ensure_sweeper()
        item = (service, callback)
        self.registry.node_watchers.append(item)
        return _ListWatch(self.registry.node_watchers, item)  # type: ignore[arg-type]

    async def kv_get(self, key: str) -> KVEntry | None:
        return self.registry.kv.get(key)

    async def kv_put(self, key: str, value: bytes) -> KVEntry:
        entry = await self.registry.write(key, value)
        assert entry is not None
        return entry

    async def kv_cas(self, key: str, value: bytes, expected_version: int) -> KVEntry | None:
        current = self.registry.kv.get(key)
        if (current.version if current is not None else 0) != expected_version:
            return None
        return await self.registry.write(key, value)

    async def kv_delete(self, key: str) -> None:
        if key in self.registry.kv:
            await self.registry.write(key, None)

    async def kv_list(self, prefix: str) -> list[KVEntry]:
        return sorted((e for k, e in self.registry.kv.items() if k.startswith(prefix)), key=lambda e: e.key)

    async def watch_prefix(self, prefix: str, callback: KVCallback) -> Watch:
        item = (prefix, callback)
        self.registry.kv_watchers.append(item)
        return _ListWatch(self.registry.kv_watchers, item)  # type: ignore[arg-type]

    async def close(self) -> None:
        for task in [*self._keepalives.values(), *([self._sweeper] if self._sweeper else [])]:
            task.cancel()
        for task in [*self._keepalives.values(), *([self._sweeper] if self._sweeper else [])]:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._keepalives.clear()
        self._sweeper = None
