"""Consul discovery through py-consul's asyncio client (`import consul`; the maintained
fork of python-consul). Services are agent registrations with a TTL check that this
client passes itself; discovery and watches use health queries (?passing), watches are
blocking queries with an explicit `wait`; the KV is under uav/kv/ with ?cas= writes
(ModifyIndex is the version; cas=0 creates only if absent). The ACL token is sent as a
header and never logged."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

import consul
import consul.aio

from controlplane.placement.discovery import (
    DiscoveryError,
    KVCallback,
    KVEntry,
    NodeCallback,
    ServiceDiscovery,
    ServiceNode,
    TaskWatch,
    Watch,
    WatchEvent,
    call_back,
    validate_registration,
)

log = logging.getLogger(__name__)
KV = "uav/kv/"
WAIT = "5s"  # blocking queries always carry an explicit wait


def _service_id(service: str, node_id: str) -> str:
    return f"{service}-{node_id}"


class ConsulServiceDiscovery(ServiceDiscovery):
    def __init__(self, host: str = "127.0.0.1", port: int = 8500, token: str | None = None) -> None:
        self.host, self.port = host, port
        self._token = token
        self._client: Any = None
        self._keepalives: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._watches: list[Watch] = []

    def __repr__(self) -> str:
        return f"ConsulServiceDiscovery({self.host}:{self.port}, token={'set' if self._token else 'none'})"

    def _c(self) -> Any:
        if self._client is None:  # py-consul's aio client must be built inside a running loop
            self._client = consul.aio.Consul(host=self.host, port=self.port, token=self._token)
        return self._client

    async def _do(self, what: str, coro: Any) -> Any:
        try:
            return await coro
        except consul.ACLPermissionDenied:
            raise DiscoveryError(f"consul at {self.host}:{self.port} refused the ACL token ({what})") from None
        except (TimeoutError, consul.ConsulException, OSError) as exc:
            raise DiscoveryError(f"consul at {self.host}:{self.port}: {what} failed: {type(exc).__name__}") from None

    # --- services ---------------------------------------------------------------------------

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
        sid = _service_id(service, node_id)
        c = self._c()
        meta_all = {"node_id": node_id, **dict(meta or {})}
        await self._do(
            "register",
            c.agent.service.register(
                service, service_id=sid, address=address, port=port, meta=meta_all, check=consul.Check.ttl(f"{ttl:g}s")
            ),
        )
        await self._do("check pass", c.agent.check.ttl_pass(f"service:{sid}"))
        old = self._keepalives.pop((service, node_id), None)
        if old is not None:
            old.cancel()

        async def keepalive() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                try:
                    await self._do("check pass", c.agent.check.ttl_pass(f"service:{sid}"))
                except DiscoveryError as exc:
                    log.warning("consul TTL pass for %s failed: %s", sid, exc)

        self._keepalives[(service, node_id)] = asyncio.get_running_loop().create_task(keepalive())

    async def deregister(self, node_id: str, *, service: str = "raft-node") -> None:
        self.stop_keepalive(node_id, service=service)
        await self._do("deregister", self._c().agent.service.deregister(_service_id(service, node_id)))

    def stop_keepalive(self, node_id: str, *, service: str = "raft-node") -> None:
        task = self._keepalives.pop((service, node_id), None)
        if task is not None:
            task.cancel()

    @staticmethod
    def _nodes(entries: list[dict[str, Any]], service: str) -> list[ServiceNode]:
        out = []
        for e in entries or []:
            s = e["Service"]
            meta = dict(s.get("Meta") or {})
            node_id = meta.pop("node_id", s["ID"])
            out.append(ServiceNode(service, node_id, s.get("Address", ""), int(s.get("Port", 0)), meta))
        return sorted(out, key=lambda n: n.node_id)

    async def discover(self, service: str = "raft-node") -> list[ServiceNode]:
        _, entries = await self._do("health query", self._c().health.service(service, passing=True))
        return self._nodes(entries, service)

    async def watch(self, callback: NodeCallback, *, service: str = "raft-node") -> Watch:
        index, entries = await self._do("health query", self._c().health.service(service, passing=True))
        known = {n.node_id: n for n in self._nodes(entries, service)}

        async def loop() -> None:
            nonlocal index
            while True:
                try:
                    index, entries = await self._do(
                        "health watch", self._c().health.service(service, passing=True, index=index, wait=WAIT)
                    )
                except DiscoveryError as exc:
                    log.warning("consul watch on %s: %s; retrying", service, exc)
                    await asyncio.sleep(0.5)
                    continue
                now = {n.node_id: n for n in self._nodes(entries, service)}
                for nid, node in now.items():
                    if nid not in known:
                        await call_back(callback, WatchEvent.ADDED, node)
                    elif known[nid] != node:
                        await call_back(callback, WatchEvent.UPDATED, node)
                for nid, node in known.items():
                    if nid not in now:
                        await call_back(callback, WatchEvent.REMOVED, node)
                known.clear()
                known.update(now)

        watch = TaskWatch(asyncio.get_running_loop().create_task(loop()))
        self._watches.append(watch)
        return watch

    # --- KV ---------------------------------------------------------------------------------

    @staticmethod
    def _entry(d: dict[str, Any]) -> KVEntry:
        return KVEntry(d["Key"][len(KV) :], d.get("Value") or b"", int(d["ModifyIndex"]))

    async def kv_get(self, key: str) -> KVEntry | None:
        _, d = await self._do("kv get", self._c().kv.get(KV + key))
        return None if d is None else self._entry(d)

    async def kv_put(self, key: str, value: bytes) -> KVEntry:
        await self._do("kv put", self._c().kv.put(KV + key, value))
        entry = await self.kv_get(key)
        if entry is None:
            raise DiscoveryError(f"consul lost {key!r} right after writing it")
        return entry

    async def kv_cas(self, key: str, value: bytes, expected_version: int) -> KVEntry | None:
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, got {expected_version}")
        ok = await self._do("kv cas", self._c().kv.put(KV + key, value, cas=expected_version))
        if not ok:
            return None
        return await self.kv_get(key)

    async def kv_delete(self, key: str) -> None:
        await self._do("kv delete", self._c().kv.delete(KV + key))

    async def kv_list(self, prefix: str) -> list[KVEntry]:
        _, items = await self._do("kv list", self._c().kv.get(KV + prefix, recurse=True))
        return sorted((self._entry(d) for d in items or []), key=lambda e: e.key)

    async def watch_prefix(self, prefix: str, callback: KVCallback) -> Watch:
        index, items = await self._do("kv list", self._c().kv.get(KV + prefix, recurse=True))
        known = {e.key: e for e in (self._entry(d) for d in items or [])}

        async def loop() -> None:
            nonlocal index
            while True:
                try:
                    index, items = await self._do(
                        "kv watch", self._c().kv.get(KV + prefix, recurse=True, index=index, wait=WAIT)
                    )
                except DiscoveryError as exc:
                    log.warning("consul kv watch on %s: %s; retrying", prefix, exc)
                    await asyncio.sleep(0.5)
                    continue
                now = {e.key: e for e in (self._entry(d) for d in items or [])}
                for key in sorted(now):
                    if key not in known or known[key].version != now[key].version:
                        await call_back(callback, key, now[key])
                for key in sorted(set(known) - set(now)):
                    await call_back(callback, key, None)
                known.clear()
                known.update(now)

        watch = TaskWatch(asyncio.get_running_loop().create_task(loop()))
        self._watches.append(watch)
        return watch

    async def close(self) -> None:
        for watch in self._watches:
            await watch.cancel()
        self._watches.clear()
        for service, node_id in list(self._keepalives):
            with contextlib.suppress(DiscoveryError):
                await self.deregister(node_id, service=service)
        if self._client is not None:
            await self._client.close()
            self._client = None
