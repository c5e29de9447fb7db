"""Raft replicas (and the station agents beside them) as named, detached Ray actors;
controller_actor.py and station_ingest.py (a station's telemetry ingest) are the other
modules that decorate with Ray.

RaftReplica is plain Python; `RaftActor` is its Ray decoration. A replica keeps its Raft
state on its station's disk (data_root/<group>/<replica>), never in Ray's GCS, and rebuilds
everything from there whenever Ray (re)starts it: Ray restarts re-run __init__, and the
node starts on the first call that arrives (a peer's heartbeat is enough).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from controlplane.blank_founder import PeerAnswer, ask_until_sure
from controlplane.cluster_secret import group_secret
from controlplane.leader_stream.server import leader_stream_route
from controlplane.metrics.ray_sink import RaySink
from controlplane.metrics.replica import ReplicaMetrics
from controlplane.persist import DiskStorage, StorageError, peek_hard_state, read_peers_heard
from controlplane.persist.faults import with_disk_faults
from controlplane.placement.discovery import create_service_discovery, is_shared
from controlplane.process_memory import freeze_started_process, lean_arrow
from controlplane.raft import NotLeaderError
from controlplane.ray_group import NAMESPACE as NAMESPACE  # the client-side helpers, re-exported
from controlplane.ray_group import actor_name as actor_name
from controlplane.ray_group import answer_while_leading as answer_while_leading
from controlplane.ray_group import find_leader as find_leader
from controlplane.ray_group import group_replicas as group_replicas
from controlplane.ray_group import on_station as on_station
from controlplane.replica import LEADER_TELEMETRY, Replica, ReplicaSettings
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.faults import with_faults
from controlplane.rpc.http import HTTPTransportServer
from controlplane.rpc.ray import RayResolvedHTTPTransport, RayTransport
from controlplane.rpc.stats import ArrowStatsWriter
from controlplane.rpc.stats_files import StatsRetention, keep_flushing, window_files
from controlplane.rpc.stream import StreamTransport
from controlplane.station_ingest import IngestActor as IngestActor
from controlplane.station_ingest import StationIngest as StationIngest
from controlplane.station_ingest import start_ingest as start_ingest
from controlplane.sync.coalescer import CoalescerConfig

log = logging.getLogger(__name__)


class LostDiskError(StorageError):
    """A founder restarted without its data directory after it took part (a peer has had messages from it)."""


@dataclass(frozen=True)
class ReplicaSpec:
    group: str
    replica: int
    founders: tuple[int, ...]
    data_root: str
    tick_interval: float = 0.05
    election_ticks: int = 10
    snapshot_every: int = 10_000
    # Peer RPC (the operator's to set): short timeouts and few retries, since Raft resends.
    rpc_timeout: float = 0.5
    rpc_max_retries: int = 2
    # A replica added after founding starts empty and learns the log (and the founding
    # configuration) from the leader, as a learner first.
    joining: bool = False
    # "http" (peers stream over WebSockets on the replica's HTTP port, which also serves the
    # leader stream; ~30x sooner delivery than actor calls, bench/transport.py) or "ray".
    transport: str = "http"
    # Peer authentication: None means the group's own secret (cluster_secret.py), made at the
    # first deploy and found by every replica; a replica never serves peers off loopback without one.
    cluster_token: str | None = field(default=None, repr=False)
    # The address a replica's HTTP endpoint binds and advertises: the station's own address by
    # default ("node-ip" asks Ray; loopback when Ray runs on loopback), or one given.
    http_host: str = "node-ip"
    # Telemetry naming a UAV the fleet does not know: rejected (False) or registered at the
    # station that received it (True).
    auto_register_uavs: bool = False
    # The leader folds the telemetry tables of all stations into one log entry per batch.
    telemetry: CoalescerConfig = LEADER_TELEMETRY
    # Every peer RPC attempt as an Arrow row in Parquet files under the data directory
    # (rpc-stats/); off: only the counters of get_statistics and Ray's metrics.
    rpc_stats: bool = True
    stats_flush_interval: float = 2.0  # seconds between RPC-stats Parquet flushes
    stats_retention: StatsRetention = field(default_factory=StatsRetention)  # a day, 1 GiB per replica
    # DISCOVERY_TYPE and its settings: with etcd or Consul the replica registers there as
    # `raft-node` under its own address, kept healthy by a TTL (lease or check).
    discovery: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        if not self.group or "/" in self.group:
            raise ValueError(f"group must be a non-empty name without '/', got {self.group!r}")
        if self.transport not in ("http", "ray"):
            raise ValueError(f"transport must be 'http' or 'ray', got {self.transport!r}")
        if not isinstance(self.rpc_stats, bool):
            raise ValueError(f"rpc_stats must be True or False, got {self.rpc_stats!r}")
        if self.joining == (self.replica in self.founders):
            raise ValueError(
                f"replica {self.replica}: a founder ({self.founders}) cannot join, and only founders bootstrap"
            )
        self.settings()  # the replica's own checks, at deploy time rather than in the actor

    def settings(self, cluster_token: str | None = None) -> ReplicaSettings:
        """The replica's settings; `cluster_token` stands in for the spec's own when it has none."""
        return ReplicaSettings(
            tick_interval=self.tick_interval,
            election_ticks=self.election_ticks,
            snapshot_every=self.snapshot_every,
            rpc=RPCConfig(
                timeout=self.rpc_timeout,
                max_retries=self.rpc_max_retries,
                retry_delay=0.02,
                cluster_token=self.cluster_token or cluster_token,
            ),
            auto_register_uavs=self.auto_register_uavs,
            telemetry=self.telemetry,
        )

    @property
    def directory(self) -> Path:
        return Path(self.data_root) / self.group / str(self.replica)


class RaftReplica:
    """The Ray shell around a Replica: its station's disk, its HTTP endpoint for peers, RPC
    statistics in Parquet, the lost-disk check, and going down when its Raft loop fails."""

    def __init__(self, spec: ReplicaSpec) -> None:
        lean_arrow()
        self.spec = spec
        self.replica: Replica | None = None
        self.stats: ArrowStatsWriter | None = None
        self.server: HTTPTransportServer | None = None
        self._token = ""
        self.started_at = time.time()
        self.recovered_entries = 0
        self._starting: asyncio.Lock | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._metrics_task: asyncio.Task[None] | None = None
        self.discovery: Any = None  # where this replica registered, if anywhere

    async def _ensure_started(self) -> Replica:
        if self.replica is not None:
            return self.replica
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.replica is None:
                self.replica = await self._start()
        return self.replica

    async def _start(self) -> Replica:
        spec = self.spec
        storage = DiskStorage(spec.directory, cluster=spec.group, node_id=spec.replica)
        if storage.is_empty() and not spec.joining:
            reason = await ask_until_sure(spec.replica, self._peer_answers)
            if reason is not None:
                storage.close()
                # DESIGN.md: a replica back without its disk must not vote under its old
                # identity with a blank state; it needs a membership replacement instead.
                raise LostDiskError(
                    f"replica {spec.replica} of {spec.group!r} has no Raft state in {spec.directory}, but "
                    f"{reason}: refusing to rejoin under the old identity"
                )
            storage.bootstrap(list(spec.founders))
        self.recovered_entries = len(storage.wal.entries())
        if spec.rpc_stats:
            self.stats = ArrowStatsWriter(
                spec.directory / "rpc-stats",
                node=f"{spec.group}-{spec.replica}",
                flush_rows=20_000,
                retention=spec.stats_retention,
            )
        token = self._token = spec.cluster_token or group_secret(spec.group)
        settings = spec.settings(token)
        transport: Any = (
            RayResolvedHTTPTransport(NAMESPACE, StreamTransport(settings.rpc))
            if spec.transport == "http"
            else RayTransport(NAMESPACE)
        )
        transport = with_faults(transport, spec.replica)  # chaos runs only (UAV_FAULTS*); off by default
        metrics = ReplicaMetrics(RaySink(), spec.group, str(spec.replica))  # on Ray's Prometheus endpoint
        replica = Replica(
            spec.replica,
            metrics.storage(with_disk_faults(storage, spec.replica)),  # faults: chaos runs only (UAV_FAULTS_FILE)
            transport,
            lambda peer: actor_name(spec.group, peer),
            settings,
            seed=int(time.time()),
            hooks=[metrics.record_attempt] if self.stats is None else [self.stats, metrics.record_attempt],
            on_failure=self._go_down,
        )
        await replica.start()
        if spec.transport == "http":
            host = spec.http_host
            if host == "node-ip":
                host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
            self.server = HTTPTransportServer(host, 0, token=token)

            async def deliver(body: bytes) -> None:
                replica.deliver(body)

            await self.server.start(deliver, [leader_stream_route(replica)], answer=replica.call)
            await self._register(self.server.address)
        # A killed replica loses only the rows of the last interval (they live in memory).
        stats = self.stats
        if stats is not None:
            self._stats_task = asyncio.get_running_loop().create_task(
                keep_flushing(stats.flush, stats.retain, spec.stats_flush_interval, f"replica {spec.replica}")
            )
        self._metrics_task = asyncio.get_running_loop().create_task(metrics.sample_every(replica))
        freeze_started_process()
        return replica

    @property
    def station(self) -> str:
        """The station this replica runs on (from the resource that pins it), or ""."""
        resources = ray.get_runtime_context().get_assigned_resources()  # type: ignore[no-untyped-call]
        return next((r[len("station:") :] for r in resources if r.startswith("station:")), "")

    async def _register(self, url: str) -> None:
        env = dict(self.spec.discovery)
        if not is_shared(env):
            return
        host, port = url.rsplit("//", 1)[-1].rsplit(":", 1)
        meta = {"group": self.spec.group, "replica": str(self.spec.replica), "station": self.station}
        try:
            self.discovery = create_service_discovery(env)
            await self.discovery.register(f"{self.spec.group}-{self.spec.replica}", host, int(port), meta, ttl=10.0)
        except Exception as exc:  # Raft does not need it: serve on, unlisted
            log.warning(
                "replica %d could not register in %s discovery: %s", self.spec.replica, env["DISCOVERY_TYPE"], exc
            )

    def _go_down(self, exc: BaseException) -> None:
        """The Raft loop failed (a storage error, a bug): a replica that cannot make progress
        must not go on answering. Exit the process; Ray restarts the actor, which rebuilds
        itself from its disk (or fails the same way, visibly, in its log)."""
        log.error("replica %s of %r: Raft loop failed (%s: %s); exiting for a restart from disk",
                  self.spec.replica, self.spec.group, type(exc).__name__, exc)  # fmt: skip
        with contextlib.suppress(Exception):
            if self.stats is not None:
                self.stats.flush()
        os._exit(70)  # EX_SOFTWARE; an unexpected exit, so Ray restarts the actor

    async def _peer_answers(self) -> dict[str, PeerAnswer | None]:
        """Each other founder's term and the peers it has heard from (None: no answer)."""

        async def ask(peer: int) -> PeerAnswer | None:
            try:
                handle: Any = ray.get_actor(actor_name(self.spec.group, peer), namespace=NAMESPACE)
                term, heard = await asyncio.wait_for(handle.probe_participation.remote(), 5.0)
            except (ValueError, TimeoutError, ray.exceptions.RayError):
                return None
            return PeerAnswer(term, frozenset(heard))

        peers = [p for p in self.spec.founders if p != self.spec.replica]
        answers = await asyncio.gather(*(ask(p) for p in peers))
        return {f"replica {p}": answer for p, answer in zip(peers, answers, strict=True)}

    async def probe_participation(self) -> tuple[int, list[int]]:
        """This replica's term and the peers it has had messages from, from memory or its disk;
        never starts the node."""
        if self.replica is not None:
            return self.replica.node.status().term, sorted(self.replica.node.peers_heard)
        hard_state = peek_hard_state(self.spec.directory)
        return (hard_state.term if hard_state else 0), sorted(read_peers_heard(self.spec.directory))

    async def get_spec(self) -> ReplicaSpec:
        return self.spec

    # --- called by peers and clients --------------------------------------------------------

    async def receive(self, body: bytes) -> None:
        (await self._ensure_started()).deliver(body)

    async def http_address(self) -> str:
        await self._ensure_started()
        if self.server is None:
            raise RuntimeError(f"replica {self.spec.replica} does not serve HTTP (transport={self.spec.transport})")
        return self.server.address

    async def client_endpoint(self) -> tuple[str, str] | None:
        """Where SDK clients reach this replica's leader stream, and the group's token
        (None: it serves no HTTP). Only callers inside the Ray cluster can ask, and they can
        read the group's secret from Ray's key-value store anyway."""
        await self._ensure_started()
        if self.server is None:
            return None
        return self.server.address, self._token

    async def propose(self, command: bytes, timeout: float = 5.0) -> Any:
        return await (await self._ensure_started()).propose(command, timeout)

    async def propose_many(self, commands: list[bytes], timeout: float = 5.0) -> list[tuple[str, Any]]:
        """See Replica.propose_many: per command ("ok", answer) or ("retry", why)."""
        return await (await self._ensure_started()).propose_many(commands, timeout)

    async def query_many(
        self, queries: list[tuple[str, dict[str, Any] | None]], consistency: str = "linearizable"
    ) -> list[tuple[bool, Any]]:
        return await (await self._ensure_started()).query_many(queries, consistency)

    async def query(self, name: str, args: dict[str, Any] | None = None, consistency: str = "linearizable") -> Any:
        return await (await self._ensure_started()).query(name, args, consistency)

    async def watch(self, from_index: int, kinds: list[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        return await (await self._ensure_started()).watch(from_index, kinds, timeout)

    async def checkpoint_digests(self, index: int) -> dict[str, str] | None:
        return (await self._ensure_started()).checkpoint_digests(index)

    async def submit_telemetry(self, refs: list[Any], timeout: float = 10.0) -> list[Any]:
        """Leader only: encoded telemetry segments (state/telemetry.py) as ObjectRefs (in a
        list, so Ray passes the refs and not their values). Returns the apply counts of the
        entries they went in, once applied here."""
        replica = await self._ensure_started()
        if not replica.node.is_leader:
            raise NotLeaderError(replica.node.status().leader_id)
        segments = await asyncio.gather(*refs)
        return await replica.submit_segments(list(segments), timeout)

    async def status(self) -> dict[str, Any]:
        replica = await self._ensure_started()
        return {
            **replica.status(),
            "station": self.station,
            "address": self.server.address if self.server is not None else "",  # where peers reach it
            "recovered_entries": self.recovered_entries,
            "started_at": self.started_at,
            "pid": os.getpid(),  # benchmarks read its CPU time from /proc
        }

    async def change_membership(self, op: str, node_id: int, timeout: float = 10.0) -> None:
        """Leader only: op is add_learner, add_voter (promote) or remove."""
        await (await self._ensure_started()).change_membership(op, node_id, timeout)

    async def flush_stats(self) -> dict[str, Any]:
        """The RPC rows kept since the last flush, written to Parquet ("file" None: none were
        kept, or the replica keeps none: "rpc_stats" False), and the running counters."""
        replica = await self._ensure_started()
        path = None if self.stats is None else self.stats.flush()
        return {
            "file": str(path) if path else None,
            "rows": 0 if self.stats is None else self.stats.rows_written,
            "rpc_stats": self.stats is not None,
            "statistics": replica.client.get_statistics(),
        }

    async def stats_files(self, since: float | None = None, until: float | None = None) -> list[tuple[str, bytes]]:
        """This replica's RPC statistics (flushed first) as Parquet files, for gathering
        elsewhere (replicas run on other stations' disks): every file, or one file with the
        rows of since <= time < until (epoch seconds)."""
        await self.flush_stats()
        if self.stats is None:
            return []  # deployed with rpc_stats=False: it keeps none
        return await asyncio.to_thread(window_files, self.stats.files(), self.stats.node, since, until)


RaftActor = ray.remote(RaftReplica)


class StationAgent:
    """Runs on one station (pinned by its `station:<name>` resource) and keeps the station
    registered as `uav-station` in discovery under a TTL check, with a small HTTP health
    endpoint as its address. When the station (or the agent) dies, the TTL lapses and the
    planner sees the station as unhealthy. Registers again by itself after Ray restarts it."""

    def __init__(self, station: str, discovery_env: dict[str, str], ttl: float = 10.0) -> None:
        self.station = station
        self.discovery_env = dict(discovery_env)
        self.ttl = ttl
        self.discovery: Any = None
        self._runner: Any = None
        self.address, self.port = "", 0
        self._registering: asyncio.Task[None] | None = None
        ray.get_runtime_context().current_actor.start.remote()  # runs once the constructor returns

    async def start(self) -> dict[str, Any]:
        """Idempotent, also when called twice at once (the agent's own call and the deployer's);
        a failed registration (discovery unreachable) is tried again by the next call."""
        failed = self._registering is not None and self._registering.done() and self._registering.exception()
        if self._registering is None or failed:
            if self._runner is not None:
                await self._runner.cleanup()
                self._runner = None
            self._registering = asyncio.get_running_loop().create_task(self._register())
        await asyncio.shield(self._registering)
        return await self.info()

    async def _register(self) -> None:
        from aiohttp import web

        from controlplane.placement.discovery import create_service_discovery
        from controlplane.placement.planner import STATION_SERVICE

        async def health(_: web.Request) -> web.Response:
            return web.json_response({"station": self.station, "ok": True})

        app = web.Application()
        app.router.add_get("/health", health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        # The station's own address (what other stations reach), as replicas bind theirs.
        host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.discovery = create_service_discovery(self.discovery_env)
        node_id = ray.get_runtime_context().get_node_id()
        await self.discovery.register(
            self.station,
            host,
            port,
            {"ray_node_id": node_id, "capacity": "1"},
            service=STATION_SERVICE,
            ttl=self.ttl,
        )
        self.address, self.port = host, port

    async def info(self) -> dict[str, Any]:
        return {"station": self.station, "address": self.address, "port": self.port}


StationAgentActor = ray.remote(StationAgent)


def start_station_agents(stations: list[str], discovery_env: dict[str, str], ttl: float = 10.0) -> dict[str, Any]:
    """One detached agent per station; returns when all have registered."""
    agents = {s: on_station(StationAgentActor, f"station-agent-{s}", s).remote(s, discovery_env, ttl) for s in stations}
    ray.get([a.start.remote() for a in agents.values()])
    return agents


def start_replica(spec: ReplicaSpec, station: str) -> Any:
    """Create (or find) the detached actor for one replica, pinned to its station."""
    return on_station(RaftActor, actor_name(spec.group, spec.replica), station, max_task_retries=0).remote(spec)


def deploy(
    group: str,
    stations: list[str],
    data_root: str,
    *,
    tick_interval: float = 0.05,
    snapshot_every: int = 10_000,
    transport: str = "http",
    cluster_token: str | None = None,
    http_host: str = "node-ip",
    auto_register_uavs: bool = False,
    telemetry: CoalescerConfig = LEADER_TELEMETRY,
    rpc_timeout: float = 0.5,
    rpc_max_retries: int = 2,
    discovery_env: Mapping[str, str] | None = None,
    rpc_stats: bool = True,
) -> dict[int, Any]:
    """Create (or find) one detached replica per station, pinned by the station resource.
    Idempotent: replicas that already run are returned as they are. discovery_env
    (DISCOVERY_TYPE and its settings): where replicas register, with etcd or Consul.
    rpc_stats=False: replicas keep no per-attempt Parquet rows (ReplicaSpec.rpc_stats)."""
    if len(set(stations)) != len(stations) or not stations:
        raise ValueError(f"stations must be distinct and non-empty, got {stations}")
    founders = tuple(range(1, len(stations) + 1))
    if transport == "http" and cluster_token is None:
        group_secret(group)  # made once, before any replica asks for it
    handles: dict[int, Any] = {}
    for replica, station in enumerate(stations, start=1):
        spec = ReplicaSpec(
            group,
            replica,
            founders,
            data_root,
            tick_interval,
            snapshot_every=snapshot_every,
            transport=transport,
            cluster_token=cluster_token,
            http_host=http_host,
            auto_register_uavs=auto_register_uavs,
            telemetry=telemetry,
            rpc_timeout=rpc_timeout,
            rpc_max_retries=rpc_max_retries,
            discovery=tuple(sorted((discovery_env or {}).items())),
            rpc_stats=rpc_stats,
        )
        handles[replica] = start_replica(spec, station)
    return handles


async def _spec_of_a_live_replica(live: dict[int, Any], timeout: float) -> ReplicaSpec:
    errors = []
    for handle in live.values():
        try:
            spec: ReplicaSpec = await asyncio.wait_for(handle.get_spec.remote(), max(0.5, timeout))
            return spec
        except (ray.exceptions.RayError, TimeoutError) as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    raise TimeoutError(f"no live replica told its settings: {errors}")


async def replace_replica(
    handles: dict[int, Any],
    group: str,
    old: int,
    new_station: str,
    data_root: str | None = None,
    *,
    new_id: int | None = None,
    timeout: float = 60.0,
) -> int:
    """Replace member `old` (its station is gone, or its disk) by a fresh replica on
    `new_station`: the newcomer joins as a learner, is promoted once caught up, then `old` is
    removed. It runs with every setting of the group's other replicas (asked from a live one);
    `data_root` overrides where its directory goes. Resumable: given the `new_id` of a move
    begun before, each step already done (the replica started, added, promoted; the old one
    removed) is skipped. Returns the new replica id; `handles` is updated in place."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    new_id = new_id if new_id is not None else max(handles) + 1
    live = {r: h for r, h in handles.items() if r not in (old, new_id)}
    template = await _spec_of_a_live_replica(live, deadline - loop.time())
    if template.group != group:
        raise ValueError(f"the replicas given belong to group {template.group!r}, not {group!r}")
    spec = dataclasses.replace(
        template,
        replica=new_id,
        founders=tuple(sorted(r for r in {*handles, old} if r != new_id)),
        joining=True,
        data_root=data_root if data_root is not None else template.data_root,
    )
    handles[new_id] = start_replica(spec, new_station)  # the running one, if a move began it

    async def leader_status() -> tuple[int, dict[str, Any]]:
        leader = await find_leader(live, deadline - loop.time())
        return leader, await live[leader].status.remote()

    async def on_leader(op: str, node_id: int) -> None:
        while True:
            leader, _ = await leader_status()
            try:
                await live[leader].change_membership.remote(op, node_id)
                return
            except ray.exceptions.RayTaskError as exc:
                if loop.time() > deadline:
                    raise TimeoutError(f"{op} {node_id} did not commit: {exc}") from None
                await asyncio.sleep(0.1)

    _, st = await leader_status()
    if new_id not in st["voters"] and new_id not in st["learners"]:
        await on_leader("add_learner", new_id)
    live[new_id] = handles[new_id]  # a member now: it may lead once promoted
    if new_id not in (await leader_status())[1]["voters"]:
        while True:  # promote only a learner that has caught up
            _, st = await leader_status()
            if st["match"].get(new_id, 0) >= st["commit"] - 1:
                break
            if loop.time() > deadline:
                raise TimeoutError(f"replica {new_id} did not catch up: {st}")
            await asyncio.sleep(0.1)
        await on_leader("add_voter", new_id)
    _, st = await leader_status()
    if old in st["voters"] or old in st["learners"]:
        await on_leader("remove", old)
    gone = handles.pop(old, None)
    if gone is not None:
        ray.kill(gone, no_restart=True)
    return new_id
