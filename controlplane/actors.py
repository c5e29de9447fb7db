"""The only module that touches @ray.remote: Raft replicas as named, detached Ray actors.

RaftReplica is plain Python; `RaftActor` is its Ray decoration. A replica keeps its Raft
state on its station's disk (data_root/<group>/<replica>), never in Ray's GCS, and rebuilds
everything from there whenever Ray (re)starts it: Ray restarts re-run __init__, and the
node starts on the first call that arrives (a peer's heartbeat is enough).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from controlplane.node import RaftNode
from controlplane.persist import DiskStorage, FileStableStore, StorageError
from controlplane.raft import ConfChange, ConfChangeOp, NotLeaderError, RaftConfig, RaftError, Role
from controlplane.raft.codec import decode_batch
from controlplane.rpc.client import Peer, RaftRPCClient
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.faults import with_faults
from controlplane.rpc.http import HTTPTransport, HTTPTransportServer
from controlplane.rpc.ray import RayResolvedHTTPTransport, RayTransport
from controlplane.rpc.stats import ArrowStatsWriter
from controlplane.state.fleet import FleetState
from controlplane.state.model import CommandError
from controlplane.state.queries import run_query
from controlplane.state.telemetry import join_segments
from controlplane.sync.changefeed import ChangeFeed
from controlplane.sync.coalescer import Coalescer, CoalescerConfig
from controlplane.sync.ingest import TelemetryIngest

NAMESPACE = "uav-control-plane"
# The leader's telemetry batching: entries of up to 16 MB of station segments, cut after
# 2 ms or when a send slot frees up (batches grow under load; see sync/coalescer.py).
LEADER_TELEMETRY = CoalescerConfig(max_size=16 << 20, max_delay=0.002, max_in_flight=2)


class LostDiskError(StorageError):
    """A founder restarted without its data directory while the group lives on."""


def actor_name(group: str, replica: int) -> str:
    return f"raft-{group}-{replica}"


@dataclass(frozen=True)
class ReplicaSpec:
    group: str
    replica: int
    founders: tuple[int, ...]
    data_root: str
    tick_interval: float = 0.05
    election_ticks: int = 10
    snapshot_every: int = 10_000
    rpc_timeout: float = 0.5
    # A replica added after founding starts empty and learns the log (and the founding
    # configuration) from the leader, as a learner first.
    joining: bool = False
    # "http" (measured ~10x faster round trips than actor calls, bench/transport.py) or "ray".
    transport: str = "http"
    cluster_token: str | None = field(default=None, repr=False)
    # The address a replica's HTTP endpoint binds and advertises: loopback for one machine
    # (and tests); on real stations, the station's own address ("node-ip" asks Ray for it).
    http_host: str = "127.0.0.1"
    # Telemetry naming a UAV the fleet does not know: rejected (False) or registered at the
    # station that received it (True).
    auto_register_uavs: bool = False
    # The leader folds the telemetry tables of all stations into one log entry per batch.
    telemetry: CoalescerConfig = LEADER_TELEMETRY
    stats_flush_interval: float = 2.0  # seconds between RPC-stats Parquet flushes

    def __post_init__(self) -> None:
        if not self.group or "/" in self.group:
            raise ValueError(f"group must be a non-empty name without '/', got {self.group!r}")
        if self.transport not in ("http", "ray"):
            raise ValueError(f"transport must be 'http' or 'ray', got {self.transport!r}")
        if self.joining == (self.replica in self.founders):
            raise ValueError(
                f"replica {self.replica}: a founder ({self.founders}) cannot join, and only founders bootstrap"
            )


class RaftReplica:
    def __init__(self, spec: ReplicaSpec) -> None:
        self.spec = spec
        self.node: RaftNode | None = None
        self.state = FleetState()
        self.feed = ChangeFeed(self.state)
        self.telemetry: Coalescer[bytes] = Coalescer(self._propose_telemetry, len, spec.telemetry)
        self.stats: ArrowStatsWriter | None = None
        self.client: RaftRPCClient | None = None
        self.server: HTTPTransportServer | None = None
        self.started_at = time.time()
        self.recovered_entries = 0
        self._starting: asyncio.Lock | None = None
        self._stats_task: asyncio.Task[None] | None = None

    async def _ensure_started(self) -> RaftNode:
        if self.node is not None:
            return self.node
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self.node is None:
                self.node = await self._start()
        return self.node

    async def _start(self) -> RaftNode:
        spec = self.spec
        directory = Path(spec.data_root) / spec.group / str(spec.replica)
        storage = DiskStorage(directory, cluster=spec.group, node_id=spec.replica)
        if storage.is_empty() and not spec.joining:
            witness = await self._established_peer()
            if witness is not None:
                storage.close()
                # DESIGN.md: a replica back without its disk must not vote under its old
                # identity with a blank state; it needs a membership replacement instead.
                raise LostDiskError(
                    f"replica {spec.replica} of {spec.group!r} has no Raft state in {directory}, but replica "
                    f"{witness} shows the group already ran: refusing to rejoin under the old identity"
                )
            storage.bootstrap(list(spec.founders))
        self.recovered_entries = len(storage.wal.entries())
        self.stats = ArrowStatsWriter(
            directory / "rpc-stats", node=f"{spec.group}-{spec.replica}", flush_rows=20_000, keep_files=2000
        )
        rpc = RPCConfig(timeout=spec.rpc_timeout, max_retries=2, retry_delay=0.02, cluster_token=spec.cluster_token)
        transport: Any = (
            RayResolvedHTTPTransport(NAMESPACE, HTTPTransport(rpc))
            if spec.transport == "http"
            else RayTransport(NAMESPACE)
        )
        transport = with_faults(transport, spec.replica)  # chaos runs only (UAV_FAULTS*); off by default
        client = RaftRPCClient(spec.replica, transport, rpc, hooks=[self.stats])
        self.client = client
        node = RaftNode(
            RaftConfig(node_id=spec.replica, election_ticks=spec.election_ticks, seed=int(time.time())),
            storage,
            self.feed,
            lambda m: client.post(Peer(m.dst, actor_name(spec.group, m.dst)), m),
            tick_interval=spec.tick_interval,
            snapshot_every=spec.snapshot_every,
        )
        await node.start()
        if spec.transport == "http":
            host = spec.http_host
            if host == "node-ip":
                host = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
            self.server = HTTPTransportServer(host, 0, token=spec.cluster_token)

            async def deliver(body: bytes) -> None:
                for m in decode_batch(body):
                    node.receive(m)

            await self.server.start(deliver)
        self._stats_task = asyncio.get_running_loop().create_task(self._flush_stats_every(spec.stats_flush_interval))
        return node

    async def _flush_stats_every(self, interval: float) -> None:
        """A killed replica loses only the rows of the last interval (they live in memory)."""
        while True:
            await asyncio.sleep(interval)
            if self.stats is not None:
                try:
                    self.stats.flush()  # on the loop: rows are appended there, not thread-safe
                except OSError as exc:  # a full disk must not stop the replica
                    print(f"replica {self.spec.replica}: RPC stats flush failed: {exc}", flush=True)

    async def _established_peer(self) -> int | None:
        """A founder whose term shows the group has run (any election raises it past 1)."""
        for peer in self.spec.founders:
            if peer == self.spec.replica:
                continue
            try:
                handle: Any = ray.get_actor(actor_name(self.spec.group, peer), namespace=NAMESPACE)
                term: int = await asyncio.wait_for(handle.probe_term.remote(), 5.0)
            except (ValueError, TimeoutError, ray.exceptions.RayError):
                continue
            if term > 1:
                return peer
        return None

    async def probe_term(self) -> int:
        """This replica's current term, from memory or its disk; never starts the node."""
        if self.node is not None:
            return self.node.status().term
        stable = FileStableStore(Path(self.spec.data_root) / self.spec.group / str(self.spec.replica))
        return stable.load().term if stable.path.exists() else 0

    # --- called by peers and clients --------------------------------------------------------

    async def receive(self, body: bytes) -> None:
        node = await self._ensure_started()
        for m in decode_batch(body):
            node.receive(m)

    async def http_address(self) -> str:
        await self._ensure_started()
        if self.server is None:
            raise RuntimeError(f"replica {self.spec.replica} does not serve HTTP (transport={self.spec.transport})")
        return self.server.address

    async def propose(self, command: bytes, timeout: float = 5.0) -> Any:
        node = await self._ensure_started()
        return await node.propose(command, timeout)

    async def propose_many(self, commands: list[bytes], timeout: float = 5.0) -> list[tuple[str, Any]]:
        """Commands from many clients of one process (controlplane/replica_calls.py), proposed
        in one Raft round. Per command ("ok", answer) or ("retry", why) when it was not
        applied here (not leader, dropped by a newer term, timed out): resend the same bytes."""
        node = await self._ensure_started()
        outcomes = await asyncio.gather(*(node.propose(c, timeout) for c in commands), return_exceptions=True)
        answers: list[tuple[str, Any]] = []
        for outcome in outcomes:
            if isinstance(outcome, RaftError | TimeoutError):
                answers.append(("retry", f"{type(outcome).__name__}: {outcome}"))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                answers.append(("ok", outcome))
        return answers

    async def query_many(
        self, queries: list[tuple[str, dict[str, Any] | None]], consistency: str = "linearizable"
    ) -> list[tuple[bool, Any]]:
        """Named queries from many clients after one ReadIndex barrier: per query (True,
        answer) or (False, its CommandError)."""
        await self._consistent(consistency)
        answers: list[tuple[bool, Any]] = []
        for name, args in queries:
            try:
                answers.append((True, run_query(self.state, name, args)))
            except CommandError as exc:
                answers.append((False, exc))
        return answers

    async def _consistent(self, consistency: str) -> None:
        node = await self._ensure_started()
        if consistency == "linearizable":
            await node.read_barrier()
        elif consistency != "stale":
            raise ValueError(f"consistency must be 'linearizable' or 'stale', got {consistency!r}")

    async def query(self, name: str, args: dict[str, Any] | None = None, consistency: str = "linearizable") -> Any:
        """A named fleet query (state/queries.py), after a ReadIndex barrier unless stale."""
        await self._consistent(consistency)
        return run_query(self.state, name, args)

    async def watch(self, from_index: int, kinds: list[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """Changes after log index `from_index` (long poll up to `timeout`), or a reset."""
        await self._ensure_started()
        return await self.feed.wait(from_index, kinds, timeout)

    async def checkpoint_digests(self, index: int) -> dict[str, str] | None:
        """The table digests this replica computed when it applied checkpoint `index`."""
        await self._ensure_started()
        return self.state.checkpoints.get(index)

    async def submit_telemetry(self, refs: list[Any], timeout: float = 10.0) -> list[Any]:
        """Leader only: encoded telemetry segments (state/telemetry.py) as ObjectRefs (in a
        list, so Ray passes the refs and not their values), joined with every other station's
        into few log entries. Returns the apply counts of the entries they went in, once
        applied here."""
        node = await self._ensure_started()
        if not node.is_leader:
            raise NotLeaderError(node.status().leader_id)
        segments = await asyncio.gather(*refs)
        for segment in segments:
            if not isinstance(segment, bytes):
                raise TypeError(f"telemetry refs must hold encoded segments (bytes), got {type(segment).__name__}")
        return list(await asyncio.wait_for(asyncio.gather(*(self.telemetry.submit(s) for s in segments)), timeout))

    async def _propose_telemetry(self, segments: list[bytes]) -> Any:
        node = await self._ensure_started()
        return await node.propose(join_segments(segments, auto_register=self.spec.auto_register_uavs), timeout=10.0)

    async def status(self) -> dict[str, Any]:
        node = await self._ensure_started()
        s = node.status()
        return {
            "replica": self.spec.replica,
            "role": s.role.value,
            "term": s.term,
            "leader": s.leader_id,
            "commit": s.commit,
            "applied": s.applied,
            "voters": sorted(s.conf.voters),
            "learners": sorted(s.conf.learners),
            "match": s.match,
            "uavs": len(self.state.uavs),
            "missions": len(self.state.missions),
            "recovered_entries": self.recovered_entries,
            "started_at": self.started_at,
        }

    async def change_membership(self, op: str, node_id: int, timeout: float = 10.0) -> None:
        """Leader only: op is add_learner, add_voter (promote) or remove."""
        ops = {
            "add_learner": ConfChangeOp.ADD_LEARNER,
            "add_voter": ConfChangeOp.ADD_VOTER,
            "remove": ConfChangeOp.REMOVE,
        }
        if op not in ops:
            raise ValueError(f"op must be one of {sorted(ops)}, got {op!r}")
        node = await self._ensure_started()
        await node.change_membership(ConfChange(ops[op], node_id), timeout)

    async def flush_stats(self) -> dict[str, Any]:
        await self._ensure_started()
        assert self.stats is not None and self.client is not None
        path = self.stats.flush()
        return {
            "file": str(path) if path else None,
            "rows": self.stats.rows_written,
            "statistics": self.client.get_statistics(),
        }

    async def stats_files(self) -> list[tuple[str, bytes]]:
        """This replica's RPC-stats Parquet files (flushed first), for gathering elsewhere:
        replicas run on other stations' disks."""
        await self.flush_stats()
        assert self.stats is not None
        return [(p.name, p.read_bytes()) for p in sorted(self.stats.dir.glob("rpc-stats-*.parquet"))]


RaftActor = ray.remote(RaftReplica)


class StationAgent:
    """Runs on one station (pinned by its `station:<name>` resource) and keeps the station
    registered as `uav-station` in discovery under a TTL check, with a small HTTP health
    endpoint as its address. When the station (or the agent) dies, the TTL lapses and the
    planner sees the station as unhealthy."""

    def __init__(self, station: str, discovery_env: dict[str, str], ttl: float = 10.0) -> None:
        self.station = station
        self.discovery_env = dict(discovery_env)
        self.ttl = ttl
        self.discovery: Any = None
        self._runner: Any = None

    async def start(self) -> dict[str, Any]:
        if self.discovery is not None:
            return await self.info()
        from aiohttp import web

        from controlplane.placement.discovery import create_service_discovery
        from controlplane.placement.planner import STATION_SERVICE

        async def health(_: web.Request) -> web.Response:
            return web.json_response({"station": self.station, "ok": True})

        app = web.Application()
        app.router.add_get("/health", health)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.discovery = create_service_discovery(self.discovery_env)
        node_id = ray.get_runtime_context().get_node_id()
        await self.discovery.register(
            self.station,
            "127.0.0.1",
            port,
            {"ray_node_id": node_id, "capacity": "1"},
            service=STATION_SERVICE,
            ttl=self.ttl,
        )
        self.port = port
        return await self.info()

    async def info(self) -> dict[str, Any]:
        return {"station": self.station, "port": self.port}


StationAgentActor = ray.remote(StationAgent)


def on_station(actor_class: Any, name: str, station: str, **options: Any) -> Any:
    """A named, detached, always-restarted actor pinned to one station by its resource
    (0.01 CPU: Ray ignores placement hints for actors asking for none)."""
    return actor_class.options(
        name=name,
        namespace=NAMESPACE,
        lifetime="detached",
        max_restarts=-1,
        num_cpus=0.01,
        resources={f"station:{station}": 0.01},
        get_if_exists=True,
        **options,
    )


def start_station_agents(stations: list[str], discovery_env: dict[str, str], ttl: float = 10.0) -> dict[str, Any]:
    """One detached agent per station; returns when all have registered."""
    agents = {s: on_station(StationAgentActor, f"station-agent-{s}", s).remote(s, discovery_env, ttl) for s in stations}
    ray.get([a.start.remote() for a in agents.values()])
    return agents


def group_replicas(group: str) -> dict[int, Any]:
    """The live replica actors of a group, by replica id (ids need not be contiguous: a
    replaced member's id is gone for good)."""
    prefix = actor_name(group, 0)[:-1]
    found: dict[int, Any] = {}
    for entry in ray.util.list_named_actors(all_namespaces=True):
        name = entry["name"] if isinstance(entry, dict) else entry
        namespace = entry.get("namespace") if isinstance(entry, dict) else NAMESPACE
        if namespace != NAMESPACE or not name.startswith(prefix) or not name[len(prefix) :].isdigit():
            continue
        try:
            found[int(name[len(prefix) :])] = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:  # died between listing and lookup
            continue
    return found


class StationIngest(TelemetryIngest):
    """A station's telemetry ingest as a Ray actor: each coalesced table is `ray.put` once
    and its ObjectRef handed to the group's leader, found by asking the replicas and found
    again after a NotLeader answer or a dead leader. A batch re-sent after a lost answer is
    harmless: last-writer-wins counts the repeat as duplicates."""

    def __init__(self, group: str, station: str, config: CoalescerConfig | None = None, timeout: float = 15.0) -> None:
        super().__init__(station, self._forward, config)
        self.group = group
        self.timeout = timeout
        self._leader: Any = None

    async def _forward(self, segment: bytes, rows: int) -> Any:
        ref = ray.put(segment)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                if self._leader is None:
                    replicas = group_replicas(self.group)
                    if not replicas:
                        raise TimeoutError(f"group {self.group!r} has no replicas")
                    self._leader = replicas[await find_leader(replicas, max(0.5, deadline - loop.time()))]
                return await answer_while_leading(self._leader, self._leader.submit_telemetry.remote([ref]))
            except ray.exceptions.RayTaskError as exc:
                if not isinstance(exc.cause, NotLeaderError | TimeoutError):
                    raise
                error: Exception = exc
            except (ray.exceptions.RayActorError, TimeoutError) as exc:
                error = exc
            self._leader = None
            if loop.time() > deadline:
                raise TimeoutError(f"telemetry batch not committed within {self.timeout}s: {error}")
            await asyncio.sleep(0.05)


IngestActor = ray.remote(StationIngest)


def start_ingest(group: str, station: str, config: CoalescerConfig | None = None) -> Any:
    """Create (or find) the detached telemetry ingest actor of one station."""
    return on_station(IngestActor, f"ingest-{group}-{station}", station).remote(group, station, config)


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
    http_host: str = "127.0.0.1",
    auto_register_uavs: bool = False,
    telemetry: CoalescerConfig = LEADER_TELEMETRY,
) -> dict[int, Any]:
    """Create (or find) one detached replica per station, pinned by the station resource.
    Idempotent: replicas that already run are returned as they are."""
    if len(set(stations)) != len(stations) or not stations:
        raise ValueError(f"stations must be distinct and non-empty, got {stations}")
    founders = tuple(range(1, len(stations) + 1))
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
        )
        handles[replica] = start_replica(spec, station)
    return handles


# How often a slow call to the leader checks that the replica still leads (seconds).
LEADER_CHECK_INTERVAL = 0.2
# How often find_leader asks again while no replica claims to lead (seconds).
ELECTION_POLL = 0.1


async def answer_while_leading(handle: Any, ref: Any) -> Any:
    """The answer of a call to a replica; but if the replica stops answering status or stops
    leading while we wait, give up on it (TimeoutError: the caller retries elsewhere, which
    is safe for commands carrying (client, seq) and for telemetry, whose repeats are dropped
    as duplicates). Ray takes ~2 s to fail a call to a killed actor; this takes ~0.3 s."""
    call = asyncio.ensure_future(ref)
    while True:
        done, _ = await asyncio.wait({call}, timeout=LEADER_CHECK_INTERVAL)
        if done:
            return call.result()
        try:
            status = await asyncio.wait_for(handle.status.remote(), LEADER_CHECK_INTERVAL)
        except (ray.exceptions.RayError, TimeoutError):
            status = None
        if status is None or status["role"] != Role.LEADER.value:
            call.cancel()
            raise TimeoutError("the replica stopped leading while the call was in flight")


async def find_leader(handles: dict[int, Any], timeout: float = 15.0, *, ask_timeout: float = 0.5) -> int:
    """A replica that says it leads; waits for one. Answers as soon as the first claim
    arrives: a dead or restarting replica (no answer within `ask_timeout`) costs nothing
    then, and a stale claim only costs the caller one NotLeader answer. While no one leads
    (an election), it asks again every ~0.1 s without waiting for a silent replica."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        started = loop.time()
        pending = {asyncio.ensure_future(asyncio.wait_for(h.status.remote(), ask_timeout)) for h in handles.values()}
        answered = 0
        try:
            while pending:
                wait = ask_timeout if not answered else max(0.0, started + ELECTION_POLL - loop.time())
                done, pending = await asyncio.wait(pending, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
                if not done:
                    break  # the others answered "not me" and these stay silent: ask everyone again
                for ask in done:
                    if ask.cancelled() or ask.exception() is not None:  # dead, restarting, slow
                        continue
                    answered += 1
                    status = ask.result()
                    if status["role"] == Role.LEADER.value:
                        return int(status["replica"])
        finally:
            for ask in pending:
                ask.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await asyncio.sleep(max(0.0, started + ELECTION_POLL - loop.time()))
    raise TimeoutError(f"no leader among {sorted(handles)} within {timeout}s")


async def replace_replica(
    handles: dict[int, Any],
    group: str,
    old: int,
    new_station: str,
    data_root: str,
    *,
    timeout: float = 60.0,
    tick_interval: float = 0.05,
    transport: str = "http",
    cluster_token: str | None = None,
    http_host: str = "127.0.0.1",
) -> int:
    """Replace member `old` (its station is gone) by a fresh replica on `new_station`: the
    newcomer joins as a learner, is promoted once caught up, then `old` is removed. Returns
    the new replica id; `handles` is updated in place."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    live = {r: h for r, h in handles.items() if r != old}
    founders = tuple(sorted(handles))
    new_id = max(handles) + 1
    spec = ReplicaSpec(
        group,
        new_id,
        founders,
        data_root,
        tick_interval,
        joining=True,
        transport=transport,
        cluster_token=cluster_token,
    )
    handles[new_id] = start_replica(spec, new_station)
    live[new_id] = handles[new_id]

    async def on_leader(op: str, node_id: int) -> None:
        while True:
            leader = await find_leader({r: h for r, h in live.items() if r != new_id}, deadline - loop.time())
            try:
                await handles[leader].change_membership.remote(op, node_id)
                return
            except ray.exceptions.RayTaskError as exc:
                if loop.time() > deadline:
                    raise TimeoutError(f"{op} {node_id} did not commit: {exc}") from None
                await asyncio.sleep(0.1)

    await on_leader("add_learner", new_id)
    while True:  # promote only a learner that has caught up
        leader = await find_leader({r: h for r, h in live.items() if r != new_id}, deadline - loop.time())
        st = await handles[leader].status.remote()
        if st["match"].get(new_id, 0) >= st["commit"] - 1:
            break
        if loop.time() > deadline:
            raise TimeoutError(f"replica {new_id} did not catch up: {st}")
        await asyncio.sleep(0.1)
    await on_leader("add_voter", new_id)
    await on_leader("remove", old)
    gone = handles.pop(old)
    ray.kill(gone, no_restart=True)
    return new_id
