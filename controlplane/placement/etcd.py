"""etcd discovery over etcd's v3 JSON gateway (aiohttp; no grpc stack needed).

Services live at /uav/services/<service>/<node_id> attached to a lease that this client
keeps alive itself (etcd clients do not); KV entries at /uav/kv/<key>, versioned by their
mod_revision, compare-and-set by transaction. Watches stream from /v3/watch."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

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
SERVICES = "/uav/services/"
KV = "/uav/kv/"


def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s)


def _prefix_end(prefix: str) -> str:
    raw = prefix.encode()
    return _b64(raw[:-1] + bytes([raw[-1] + 1]))


class EtcdServiceDiscovery(ServiceDiscovery):
    def __init__(self, host: str = "127.0.0.1", port: int = 2379, timeout: float = 5.0) -> None:
        self.base = f"http://{host}:{port}/v3"
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None
        self._leases: dict[tuple[str, str], tuple[int, asyncio.Task[None]]] = {}
        self._watches: list[Watch] = []

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        try:
            async with self._session.post(self.base + path, json=body) as resp:
                data = await resp.json(content_type=None)
                if resp.status != 200:
                    raise DiscoveryError(f"etcd {path} answered {resp.status}: {data}")
                return dict(data)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise DiscoveryError(f"etcd at {self.base} unreachable: {type(exc).__name__}: {exc}") from None

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
        node = ServiceNode(service, node_id, address, port, dict(meta or {}))
        key = (service, node_id)
        old = self._leases.pop(key, None)
        if old is not None:
            old[1].cancel()
        lease = int((await self._call("/lease/grant", {"TTL": max(2, round(ttl))}))["ID"])
        await self._call(
            "/kv/put",
            {"key": _b64(f"{SERVICES}{service}/{node_id}"), "value": _b64(node.to_json()), "lease": str(lease)},
        )

        async def keepalive() -> None:
            while True:
                await asyncio.sleep(ttl / 3)
                try:
                    reply = await self._call("/lease/keepalive", {"ID": str(lease)})
                    if int(reply.get("result", {}).get("TTL", 0)) <= 0:
                        log.warning("etcd lease for %s/%s expired; re-registering", service, node_id)
                        await self.register(node_id, address, port, meta, service=service, ttl=ttl)
                        return
                except DiscoveryError as exc:
                    log.warning("etcd keep-alive for %s/%s failed: %s", service, node_id, exc)

        self._leases[key] = (lease, asyncio.get_running_loop().create_task(keepalive()))

    async def deregister(self, node_id: str, *, service: str = "raft-node") -> None:
        entry = self._leases.pop((service, node_id), None)
        if entry is not None:
            entry[1].cancel()
            await self._call("/lease/revoke", {"ID": str(entry[0])})
        await self._call("/kv/deleterange", {"key": _b64(f"{SERVICES}{service}/{node_id}")})

    def stop_keepalive(self, node_id: str, *, service: str = "raft-node") -> None:
        entry = self._leases.pop((service, node_id), None)
        if entry is not None:
            entry[1].cancel()

    async def _range(self, prefix: str) -> tuple[list[dict[str, Any]], int]:
        reply = await self._call("/kv/range", {"key": _b64(prefix), "range_end": _prefix_end(prefix)})
        return list(reply.get("kvs", [])), int(reply["header"]["revision"])

    async def discover(self, service: str = "raft-node") -> list[ServiceNode]:
        kvs, _ = await self._range(f"{SERVICES}{service}/")
        return sorted((ServiceNode.from_json(_unb64(kv["value"])) for kv in kvs), key=lambda n: n.node_id)

    async def watch(self, callback: NodeCallback, *, service: str = "raft-node") -> Watch:
        prefix = f"{SERVICES}{service}/"
        kvs, revision = await self._range(prefix)
        known = {_unb64(kv["key"]).decode(): ServiceNode.from_json(_unb64(kv["value"])) for kv in kvs}

        async def on_event(key: str, entry: KVEntry | None) -> None:
            if entry is None:
                gone = known.pop(key, None)
                if gone is not None:
                    await call_back(callback, WatchEvent.REMOVED, gone)
                return
            node = ServiceNode.from_json(entry.value)
            previous = known.get(key)
            known[key] = node
            if previous != node:
                await call_back(callback, WatchEvent.ADDED if previous is None else WatchEvent.UPDATED, node)

        return self._start_watch(prefix, on_event, revision + 1)

    # --- KV ---------------------------------------------------------------------------------

    @staticmethod
    def _entry(kv: dict[str, Any]) -> KVEntry:
        return KVEntry(_unb64(kv["key"]).decode()[len(KV) :], _unb64(kv.get("value", "")), int(kv["mod_revision"]))

    async def kv_get(self, key: str) -> KVEntry | None:
        reply = await self._call("/kv/range", {"key": _b64(KV + key)})
        kvs = reply.get("kvs", [])
        return self._entry(kvs[0]) if kvs else None

    async def kv_put(self, key: str, value: bytes) -> KVEntry:
        reply = await self._call("/kv/put", {"key": _b64(KV + key), "value": _b64(value)})
        return KVEntry(key, value, int(reply["header"]["revision"]))

    async def kv_cas(self, key: str, value: bytes, expected_version: int) -> KVEntry | None:
        if expected_version < 0:
            raise ValueError(f"expected_version must be >= 0, got {expected_version}")
        k = _b64(KV + key)
        compare = (
            {"target": "CREATE", "key": k, "create_revision": "0", "result": "EQUAL"}
            if expected_version == 0
            else {"target": "MOD", "key": k, "mod_revision": str(expected_version), "result": "EQUAL"}
        )
        reply = await self._call(
            "/kv/txn", {"compare": [compare], "success": [{"request_put": {"key": k, "value": _b64(value)}}]}
        )
        if not reply.get("succeeded"):
            return None
        return KVEntry(key, value, int(reply["header"]["revision"]))

    async def kv_delete(self, key: str) -> None:
        await self._call("/kv/deleterange", {"key": _b64(KV + key)})

    async def kv_list(self, prefix: str) -> list[KVEntry]:
        kvs, _ = await self._range(KV + prefix)
        return sorted((self._entry(kv) for kv in kvs), key=lambda e: e.key)

    async def watch_prefix(self, prefix: str, callback: KVCallback) -> Watch:
        _, revision = await self._range(KV + prefix)

        async def on_event(key: str, entry: KVEntry | None) -> None:
            short = key[len(KV) :]
            await call_back(callback, short, None if entry is None else KVEntry(short, entry.value, entry.version))

        return self._start_watch(KV + prefix, on_event, revision + 1)

    # --- watch stream -----------------------------------------------------------------------

    def _start_watch(self, prefix: str, on_event: KVCallback, start_revision: int) -> Watch:
        async def stream() -> None:
            revision = start_revision
            while True:
                try:
                    revision = await self._stream_once(prefix, on_event, revision)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the watch must outlive a restarting etcd
                    log.warning("etcd watch on %s broke (%s); reconnecting", prefix, exc)
                    await asyncio.sleep(0.5)

        watch = TaskWatch(asyncio.get_running_loop().create_task(stream()))
        self._watches.append(watch)
        return watch

    async def _stream_once(self, prefix: str, on_event: KVCallback, revision: int) -> int:
        body = {
            "create_request": {"key": _b64(prefix), "range_end": _prefix_end(prefix), "start_revision": str(revision)}
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.base + "/watch", json=body, timeout=aiohttp.ClientTimeout(total=None, sock_read=None)
            ) as resp,
        ):
            async for line in resp.content:
                if not line.strip():
                    continue
                result = json.loads(line).get("result", {})
                for ev in result.get("events", []):
                    kv = ev["kv"]
                    key = _unb64(kv["key"]).decode()
                    if ev.get("type") == "DELETE":
                        await call_back(on_event, key, None)
                    else:
                        await call_back(
                            on_event, key, KVEntry(key, _unb64(kv.get("value", "")), int(kv["mod_revision"]))
                        )
                    revision = int(kv["mod_revision"]) + 1
        return revision

    async def close(self) -> None:
        for watch in self._watches:
            await watch.cancel()
        self._watches.clear()
        for lease, task in self._leases.values():
            task.cancel()
            with contextlib.suppress(DiscoveryError):
                await self._call("/lease/revoke", {"ID": str(lease)})
        self._leases.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None
