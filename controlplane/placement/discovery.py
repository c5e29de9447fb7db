"""ServiceDiscovery: the interface every backend implements, and create_service_discovery()
which picks one from the environment (DISCOVERY_TYPE: static, etcd, consul, embedded; unset:
static when PEER_NODES is set, else embedded)."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import enum
import json
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class DiscoveryError(Exception):
    """Discovery is misconfigured or its backend failed."""


class WatchEvent(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    REMOVED = "removed"  # deregistered, or its TTL lapsed


@dataclass(frozen=True)
class ServiceNode:
    service: str
    node_id: str
    address: str
    port: int
    meta: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "service": self.service,
                "node_id": self.node_id,
                "address": self.address,
                "port": self.port,
                "meta": dict(self.meta),
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> ServiceNode:
        d = json.loads(data)
        return cls(d["service"], d["node_id"], d["address"], int(d["port"]), dict(d.get("meta", {})))


@dataclass(frozen=True)
class KVEntry:
    key: str
    value: bytes
    version: int  # changes on every write; compare-and-set takes it


NodeCallback = Callable[[WatchEvent, ServiceNode], Awaitable[None] | None]
KVCallback = Callable[[str, KVEntry | None], Awaitable[None] | None]


class Watch(abc.ABC):
    @abc.abstractmethod
    async def cancel(self) -> None: ...


class TaskWatch(Watch):
    """A watch served by one background task."""

    def __init__(self, task: asyncio.Task[None]) -> None:
        self.task = task

    async def cancel(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def validate_registration(node_id: str, address: str, port: int, ttl: float) -> None:
    if not node_id or "/" in node_id:
        raise ValueError(f"node_id must be a non-empty string without '/', got {node_id!r}")
    if not address:
        raise ValueError("address must not be empty")
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer in 1..65535, got {port!r}")
    if ttl < 2:
        raise ValueError(f"ttl must be at least 2 seconds, got {ttl}")


class ServiceDiscovery(abc.ABC):
    """Registration with TTL health, discovery, watches, and a small KV with compare-and-set."""

    @abc.abstractmethod
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
        """Register (or update) a node; it stays healthy while this process keeps it alive."""

    @abc.abstractmethod
    async def deregister(self, node_id: str, *, service: str = "raft-node") -> None: ...

    @abc.abstractmethod
    async def discover(self, service: str = "raft-node") -> list[ServiceNode]:
        """Healthy nodes of a service, sorted by node_id."""

    @abc.abstractmethod
    async def watch(self, callback: NodeCallback, *, service: str = "raft-node") -> Watch:
        """Call back on every change to the service's healthy nodes."""

    @abc.abstractmethod
    async def kv_get(self, key: str) -> KVEntry | None: ...

    @abc.abstractmethod
    async def kv_put(self, key: str, value: bytes) -> KVEntry: ...

    @abc.abstractmethod
    async def kv_cas(self, key: str, value: bytes, expected_version: int) -> KVEntry | None:
        """Write only if the key's version is expected_version (0: the key must not exist);
        returns the new entry, or None when someone else wrote first."""

    @abc.abstractmethod
    async def kv_delete(self, key: str) -> None: ...

    @abc.abstractmethod
    async def kv_list(self, prefix: str) -> list[KVEntry]: ...

    @abc.abstractmethod
    async def watch_prefix(self, prefix: str, callback: KVCallback) -> Watch:
        """Call back with (key, entry or None when deleted) on every change under prefix."""

    @abc.abstractmethod
    async def close(self) -> None: ...


async def call_back(callback: Callable[..., Any], *args: Any) -> None:
    result = callback(*args)
    if isinstance(result, Awaitable):
        await result


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, str(default))
    try:
        port = int(raw)
    except ValueError:
        raise DiscoveryError(f"{name} must be a port number, got {raw!r}") from None
    if not 0 < port < 65536:
        raise DiscoveryError(f"{name} must be in 1..65535, got {port}")
    return port


SHARED_BACKENDS = ("etcd", "consul")


def is_shared(env: Mapping[str, str]) -> bool:
    """Whether DISCOVERY_TYPE names a backend every station reaches (embedded lives in one
    process, static is a fixed list): only then do replicas and stations register in it."""
    return env.get("DISCOVERY_TYPE", "").strip().lower() in SHARED_BACKENDS


def create_service_discovery(env: Mapping[str, str] | None = None) -> ServiceDiscovery:
    """Pick a backend from DISCOVERY_TYPE and its settings; a wrong setting is a clear error."""
    env = os.environ if env is None else env
    # As the specification: static when PEER_NODES names the nodes; else embedded (one
    # process's registry, what a Ray deployment uses by default).
    default = "static" if env.get("PEER_NODES", "").strip() else "embedded"
    kind = (env.get("DISCOVERY_TYPE", "").strip() or default).lower()
    if kind == "embedded":
        from controlplane.placement.embedded import EmbeddedServiceDiscovery

        return EmbeddedServiceDiscovery()
    if kind == "static":
        from controlplane.placement.static import StaticServiceDiscovery

        if "PEER_NODES" not in env:
            raise DiscoveryError("DISCOVERY_TYPE=static needs PEER_NODES (a JSON list of nodes)")
        return StaticServiceDiscovery.from_json(env["PEER_NODES"])
    if kind == "etcd":
        from controlplane.placement.etcd import EtcdServiceDiscovery

        return EtcdServiceDiscovery(env.get("ETCD_HOST", "127.0.0.1"), _port(env, "ETCD_PORT", 2379))
    if kind == "consul":
        from controlplane.placement.consul import ConsulServiceDiscovery

        token = env.get("CONSUL_HTTP_TOKEN") or None
        return ConsulServiceDiscovery(env.get("CONSUL_HOST", "127.0.0.1"), _port(env, "CONSUL_PORT", 8500), token)
    raise DiscoveryError(f"DISCOVERY_TYPE must be one of embedded, static, etcd, consul; got {kind!r}")
