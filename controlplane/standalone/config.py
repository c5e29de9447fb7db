"""A standalone node's configuration, read from the environment as the specification's
integration section sets it (NODE_ID, NODE_ADDRESS, NODE_PORT, PEER_NODES, DISCOVERY_TYPE,
CONSUL_*/ETCD_*) plus ours (DATA_DIR, API_PORT, tokens, timing). Everything is checked
before anything is written: a bad value is one ConfigError naming its variable."""

from __future__ import annotations

import ipaddress
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.node_ids import raft_id_of
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.http import is_loopback
from controlplane.rpc.stats_files import StatsRetention

RAFT_SERVICE = "raft-node"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
MIN_TOKEN = 16


class ConfigError(ValueError):
    """A configuration variable is missing or wrong; the message names it."""

    def __init__(self, variable: str, reason: str) -> None:
        super().__init__(f"{variable}: {reason}")
        self.variable = variable


@dataclass(frozen=True)
class PeerNode:
    name: str
    address: str
    port: int

    @property
    def raft_id(self) -> int:
        return raft_id_of(self.name)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"


@dataclass(frozen=True)
class NodeConfig:
    name: str
    address: str
    port: int
    data_dir: Path
    api_port: int
    peers: tuple[PeerNode, ...] = ()  # from PEER_NODES (static discovery, or the founders)
    discovery_type: str = "static"
    discovery_env: Mapping[str, str] = field(default_factory=dict)
    service: str = RAFT_SERVICE  # the group's nodes' service name in discovery
    join: bool = False  # started empty, to be added to a running group
    cluster_token: str | None = field(default=None, repr=False)
    api_token: str | None = field(default=None, repr=False)
    api_insecure: bool = False
    tick_interval: float = 0.05
    election_ticks: int = 10
    rpc_timeout: float = 0.5
    rpc_max_retries: int = 2
    registration_ttl: float = 10.0
    stats_retention: StatsRetention = field(default_factory=StatsRetention)
    event_loop: str = "uvloop"  # or asyncio (uvloop falls back to asyncio when not installed)

    @property
    def me(self) -> PeerNode:
        return PeerNode(self.name, self.address, self.port)

    @property
    def raft_id(self) -> int:
        return self.me.raft_id

    @property
    def url(self) -> str:
        return self.me.url

    def founders(self) -> tuple[int, ...]:
        """The founding members: every node PEER_NODES names, and this one."""
        return tuple(sorted({self.raft_id, *(p.raft_id for p in self.peers)}))

    def rpc(self) -> RPCConfig:
        return RPCConfig(
            timeout=self.rpc_timeout,
            max_retries=self.rpc_max_retries,
            retry_delay=0.02,
            cluster_token=self.cluster_token,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> NodeConfig:
        name = _required(env, "NODE_ID")
        if not _NAME.fullmatch(name):
            raise ConfigError("NODE_ID", f"must be 1-63 letters, digits, '_', '.' or '-', got {name!r}")
        address = _required(env, "NODE_ADDRESS")
        _check_address("NODE_ADDRESS", address)
        port = _port(env, "NODE_PORT", None)
        api_port = _port(env, "API_PORT", 8080)
        if api_port == port:
            raise ConfigError("API_PORT", f"must differ from NODE_PORT ({port})")
        peers = parse_peer_nodes(env)
        kind = env.get("DISCOVERY_TYPE", "static").strip().lower()
        if kind not in ("static", "etcd", "consul"):
            raise ConfigError("DISCOVERY_TYPE", f"must be static, etcd or consul, got {kind!r}")
        event_loop = env.get("EVENT_LOOP", "").strip().lower() or "uvloop"
        if event_loop not in ("uvloop", "asyncio"):
            raise ConfigError("EVENT_LOOP", f"must be uvloop or asyncio, got {event_loop!r}")
        join = _flag(env, "NODE_JOIN")
        if kind == "static" and not peers and not join:
            raise ConfigError("PEER_NODES", "is needed with DISCOVERY_TYPE=static (the founding members, as JSON)")
        if kind != "static" and not peers and not join:
            raise ConfigError(
                "PEER_NODES", f"is needed with DISCOVERY_TYPE={kind} to name the founding members (or set NODE_JOIN=1)"
            )
        for peer in peers:
            if peer.name == name and (peer.address, peer.port) != (address, port):
                raise ConfigError(
                    "PEER_NODES",
                    f"lists {name} at {peer.address}:{peer.port}, but NODE_ADDRESS:NODE_PORT is {address}:{port}",
                )
        ids: dict[int, str] = {}
        for node in [name, *(p.name for p in peers)]:
            other = ids.setdefault(raft_id_of(node), node)
            if other != node:
                raise ConfigError("PEER_NODES", f"{node!r} and {other!r} map to the same Raft id")
        data_dir = env.get("DATA_DIR", "").strip()
        if not data_dir:
            raise ConfigError("DATA_DIR", "is required (where this node keeps its Raft log and snapshots)")
        path = Path(data_dir)
        if path.exists() and not path.is_dir():
            raise ConfigError("DATA_DIR", f"{path} exists and is not a directory")
        cluster_token = read_token(env, "CLUSTER_TOKEN")
        if cluster_token is None and not is_loopback(address):
            raise ConfigError(
                "CLUSTER_TOKEN",
                f"is required on a non-loopback address ({address}): without it anyone who reaches "
                f"port {port} could send Raft messages (set CLUSTER_TOKEN or CLUSTER_TOKEN_FILE)",
            )
        api_token = read_token(env, "CONTROLPLANE_API_TOKEN")
        insecure = _flag(env, "API_INSECURE")
        if api_token is None and not insecure:
            raise ConfigError(
                "CONTROLPLANE_API_TOKEN",
                "is required (the API's bearer token; set CONTROLPLANE_API_TOKEN or CONTROLPLANE_API_TOKEN_FILE, "
                "or API_INSECURE=1 to serve the API without authentication)",
            )
        return cls(
            name=name,
            address=address,
            port=port,
            data_dir=path,
            api_port=api_port,
            peers=peers,
            discovery_type=kind,
            discovery_env={k: v for k, v in env.items() if k.startswith(("CONSUL_", "ETCD_"))},
            service=discovery_service(env),
            join=join,
            cluster_token=cluster_token,
            api_token=api_token,
            api_insecure=insecure,
            tick_interval=_number(env, "TICK_INTERVAL", 0.05, 0.001, 10.0),
            election_ticks=int(_number(env, "ELECTION_TICKS", 10, 3, 1000, integer=True)),
            rpc_timeout=_number(env, "RPC_TIMEOUT", 0.5, 0.01, 60.0),
            rpc_max_retries=int(_number(env, "RPC_MAX_RETRIES", 2, 0, 20, integer=True)),
            registration_ttl=_number(env, "REGISTRATION_TTL", 10.0, 2.0, 3600.0),
            stats_retention=_retention(env),
            event_loop=event_loop,
        )


def _retention(env: Mapping[str, str]) -> StatsRetention:
    hours = _number(env, "STATS_MAX_AGE_HOURS", 24.0, 0.1, 24.0 * 365)
    mib = _number(env, "STATS_MAX_MB", 1024.0, 1.0, 1 << 20)
    return StatsRetention(max_age=hours * 3600, max_bytes=int(mib * (1 << 20)), compact_after=min(600.0, hours * 1800))


def discovery_service(env: Mapping[str, str]) -> str:
    service = env.get("DISCOVERY_SERVICE", "").strip() or RAFT_SERVICE
    if not _NAME.fullmatch(service):
        raise ConfigError("DISCOVERY_SERVICE", f"must be a name like raft-node, got {service!r}")
    return service


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise ConfigError(name, "is required")
    return value


def _check_address(variable: str, address: str) -> None:
    if address in ("0.0.0.0", "::"):
        raise ConfigError(variable, "must be an address peers can reach, not a wildcard")
    if address != "localhost":
        try:
            ipaddress.ip_address(address)
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9.-]{1,253}", address):
                raise ConfigError(variable, f"must be an IP address or host name, got {address!r}") from None


def _port(env: Mapping[str, str], name: str, default: int | None) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        if default is None:
            raise ConfigError(name, "is required")
        return default
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ConfigError(name, f"must be a port number in 1..65535, got {raw!r}")
    return int(raw)


def _number(
    env: Mapping[str, str], name: str, default: float, low: float, high: float, *, integer: bool = False
) -> float:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        raise ConfigError(name, f"must be {'an integer' if integer else 'a number'}, got {raw!r}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise ConfigError(name, f"must be within [{low}, {high}], got {raw}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no"):
        return False
    if raw in ("1", "true", "yes"):
        return True
    raise ConfigError(name, f"must be 1/true/yes or 0/false/no, got {raw!r}")


def read_token(env: Mapping[str, str], name: str) -> str | None:
    """A secret from NAME or from the file NAME_FILE (not both); never echoed in errors."""
    value, file = env.get(name, "").strip(), env.get(f"{name}_FILE", "").strip()
    if value and file:
        raise ConfigError(name, f"set {name} or {name}_FILE, not both")
    if file:
        try:
            value = Path(file).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{name}_FILE", f"cannot read {file}: {type(exc).__name__}") from None
        if not value:
            raise ConfigError(f"{name}_FILE", f"{file} is empty")
    if not value:
        return None
    if len(value) < MIN_TOKEN:
        raise ConfigError(name, f"must be at least {MIN_TOKEN} characters")
    if not value.isprintable() or any(c.isspace() for c in value):
        raise ConfigError(name, "must be printable characters without spaces")
    return value


def parse_peer_nodes(env: Mapping[str, str]) -> tuple[PeerNode, ...]:
    raw = env.get("PEER_NODES", "").strip()
    if not raw:
        return ()
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ConfigError("PEER_NODES", f"is not valid JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ConfigError("PEER_NODES", "must be a non-empty JSON list of {node_id, address, port}")
    peers: list[PeerNode] = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ConfigError("PEER_NODES", f"item {i} must be an object, got {type(item).__name__}")
        missing = [k for k in ("node_id", "address", "port") if k not in item]
        if missing:
            raise ConfigError("PEER_NODES", f"item {i} is missing {', '.join(missing)}")
        name, address, port = item["node_id"], item["address"], item["port"]
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError("PEER_NODES", f"item {i}: node_id must be a name like node_1, got {name!r}")
        if not isinstance(address, str):
            raise ConfigError("PEER_NODES", f"item {i}: address must be a string")
        try:
            _check_address(f"item {i}'s address", address)
        except ConfigError as exc:
            raise ConfigError("PEER_NODES", str(exc)) from None
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError("PEER_NODES", f"item {i}: port must be an integer in 1..65535, got {port!r}")
        peers.append(PeerNode(name, address, port))
    names = [p.name for p in peers]
    if len(set(names)) != len(names):
        raise ConfigError("PEER_NODES", "names a node_id twice")
    return tuple(peers)
