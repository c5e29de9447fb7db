"""`python -m controlplane node`: one replica per process, configured from the environment as
the specification's integration section does (standalone/config.py), no Ray.

The process keeps its Raft state in DATA_DIR, talks to its peers over HTTP on
NODE_ADDRESS:NODE_PORT (cluster token required off loopback), serves the fleet HTTP API on
API_PORT, and announces itself in discovery (etcd or Consul) under a TTL check. SIGTERM
hands leadership to a caught-up peer before it exits; after SIGKILL a restart recovers from
DATA_DIR. Exit status: 0 after SIGTERM, 2 for bad configuration (nothing written), 3 when
the data directory cannot be used, 70 when the Raft loop fails (restart it: systemd's
Restart=on-failure does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from controlplane.api.server import FleetAPI
from controlplane.blank_founder import PeerAnswer, ask_until_sure
from controlplane.metrics.prometheus import PrometheusSink
from controlplane.metrics.replica import ReplicaMetrics
from controlplane.persist import DiskStorage, StorageError
from controlplane.placement.discovery import DiscoveryError, ServiceDiscovery, create_service_discovery
from controlplane.process_memory import freeze_started_process, lean_arrow
from controlplane.raft import Role
from controlplane.replica import Replica, ReplicaSettings
from controlplane.rpc.http import HTTPTransportServer
from controlplane.rpc.stats import ArrowStatsWriter
from controlplane.rpc.stats_files import keep_flushing
from controlplane.rpc.stream import StreamTransport
from controlplane.standalone.backend import NodeFleetBackend
from controlplane.standalone.config import ConfigError, NodeConfig
from controlplane.standalone.peers import PeerDirectory
from controlplane.standalone.routes import client_routes
from controlplane.standalone.wire import PREFIX

log = logging.getLogger("controlplane.node")
HELP = """usage: controlplane node   (or: python -m controlplane node)

One replica of a group per process, configured by environment variables:
  NODE_ID            this node's name, e.g. node_1 (node_<n> is Raft id n)       required
  NODE_ADDRESS       the address it binds and peers reach it at                  required
  NODE_PORT          peer RPC port (Raft messages, client calls)                 required
  PEER_NODES         the founding members, JSON: [{"node_id","address","port"}]  required unless NODE_JOIN=1
  DISCOVERY_TYPE     static (default) | etcd | consul: where nodes register and find each other
  ETCD_HOST/ETCD_PORT, CONSUL_HOST/CONSUL_PORT/CONSUL_HTTP_TOKEN   discovery's server
  DATA_DIR           where the Raft log, snapshots and RPC statistics live       required
  API_PORT           the fleet HTTP API (default 8080), on NODE_ADDRESS
  CLUSTER_TOKEN or CLUSTER_TOKEN_FILE            peer authentication; required off loopback
  CONTROLPLANE_API_TOKEN or CONTROLPLANE_API_TOKEN_FILE   the API's bearer token; required
                     unless API_INSECURE=1
  NODE_JOIN=1        start empty and wait to be added to a running group (controlplane members add)
  DISCOVERY_SERVICE  the group's service name in discovery (default raft-node)
  CONTROLPLANE_GROUP the group's name (default fleet), recorded in DATA_DIR
  TICK_INTERVAL (0.05 s), ELECTION_TICKS (10), RPC_TIMEOUT (0.5 s), RPC_MAX_RETRIES (2),
  REGISTRATION_TTL (10 s), LOG_LEVEL (INFO), EVENT_LOOP (uvloop when installed, else
                     asyncio; set asyncio to choose it: uvloop measured ~15-30% faster here)
  STATS_MAX_AGE_HOURS (24), STATS_MAX_MB (1024): how long and how much RPC statistics
                     DATA_DIR/rpc-stats keeps (small files are merged as they age)

Exit status: 0 after SIGTERM (leadership handed off first), 2 bad configuration (nothing
written), 3 the data directory or discovery cannot be used, 70 the Raft loop failed."""
EXIT_CONFIG, EXIT_DATA_DIR, EXIT_RAFT_FAILED = 2, 3, 70
HANDOFF_TIMEOUT = 3.0  # seconds SIGTERM waits for a peer to take over leadership


class LostDataDirError(StorageError):
    """A founder with an empty DATA_DIR that its peers have had messages from: it must rejoin as a new member."""


class StandaloneNode:
    def __init__(self, config: NodeConfig, group: str = "fleet") -> None:
        self.config = config
        self.group = group
        self.replica: Replica | None = None
        self.storage: DiskStorage | None = None
        self.stats: ArrowStatsWriter | None = None
        self.peers: PeerDirectory | None = None
        self.peer_server: HTTPTransportServer | None = None
        self.api_runner: web.AppRunner | None = None
        self.fleet_client: NodeFleetBackend | None = None  # DataSynchronizer(node, ...) uses it
        self.metrics = PrometheusSink()  # served at the API's /metrics
        self.started_at = time.time()
        self._tasks: list[asyncio.Task[None]] = []

    def _discovery(self) -> ServiceDiscovery | None:
        if self.config.discovery_type == "static":
            return None  # PEER_NODES is the whole story
        return create_service_discovery({"DISCOVERY_TYPE": self.config.discovery_type, **self.config.discovery_env})

    async def start(self) -> None:
        c = self.config
        self.peers = PeerDirectory(c, self._discovery())
        await self.peers.start()
        storage = self.storage = DiskStorage(c.data_dir, cluster=self.group, node_id=c.raft_id)
        if storage.is_empty() and not c.join:
            reason = await ask_until_sure(c.raft_id, self._peer_answers)
            if reason is not None:
                raise LostDataDirError(
                    f"{c.data_dir} holds no Raft state, but {reason}: a founder back without its data must "
                    "not vote under its old identity. Remove it from the group and start it as a new member "
                    "(a new NODE_ID, NODE_JOIN=1), or restore its DATA_DIR"
                )
            storage.bootstrap(list(c.founders()))
        self.stats = ArrowStatsWriter(
            c.data_dir / "rpc-stats", node=c.name, flush_rows=20_000, retention=c.stats_retention
        )
        settings = ReplicaSettings(tick_interval=c.tick_interval, election_ticks=c.election_ticks, rpc=c.rpc())
        metrics = ReplicaMetrics(self.metrics, self.group, c.name)
        replica = self.replica = Replica(
            c.raft_id,
            metrics.storage(storage),
            StreamTransport(settings.rpc),
            self.peers.url_of,
            settings,
            seed=int.from_bytes(os.urandom(4), "big"),
            hooks=[self.stats, metrics.record_attempt],
            on_failure=self._go_down,
        )
        await replica.start()
        self.peer_server = HTTPTransportServer(c.address, c.port, token=c.cluster_token)

        async def deliver(body: bytes) -> None:
            replica.deliver(body)

        await self.peer_server.start(deliver, client_routes(replica, self._describe), answer=replica.call)
        self.fleet_client = NodeFleetBackend(replica, self.peers, c.cluster_token)
        api = FleetAPI(self.fleet_client, token=c.api_token, metrics=self.metrics.exposition, sink=self.metrics)
        self.api_runner = web.AppRunner(api.application(), access_log=None)
        await self.api_runner.setup()
        await web.TCPSite(self.api_runner, c.address, c.api_port).start()
        await self.peers.register()
        stats = self.stats
        self._tasks.append(
            asyncio.get_running_loop().create_task(keep_flushing(stats.flush, stats.retain, 2.0, f"node {c.name}"))
        )
        self._tasks.append(asyncio.get_running_loop().create_task(metrics.sample_every(replica)))
        log.info("node %s (raft id %d) serving peers at %s and the API at http://%s:%d",
                 c.name, c.raft_id, c.url, c.address, c.api_port)  # fmt: skip

    def _describe(self) -> dict[str, Any]:
        c = self.config
        assert self.peers is not None and self.replica is not None
        conf = self.replica.node.status().conf
        members = sorted({*conf.voters, *conf.learners})
        return {
            "name": c.name,
            "address": c.url,
            "api": f"http://{c.address}:{c.api_port}",
            "started_at": self.started_at,
            "peers": {str(m): self.peers.urls[m] for m in members if m in self.peers.urls},
        }

    async def _peer_answers(self) -> dict[str, PeerAnswer | None]:
        """Each other peer's term and the peers it has heard from (None: no answer)."""
        assert self.peers is not None
        headers = {"Authorization": f"Bearer {self.config.cluster_token}"} if self.config.cluster_token else {}
        peers = {raft_id: url for raft_id, url in self.peers.urls.items() if raft_id != self.config.raft_id}

        async def ask(http: aiohttp.ClientSession, url: str) -> PeerAnswer | None:
            try:
                async with http.get(f"{url}{PREFIX}/status", timeout=aiohttp.ClientTimeout(total=2.0)) as resp:
                    status = await resp.json() if resp.status == 200 else None
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
                return None
            if not isinstance(status, dict):
                return None
            return PeerAnswer(int(status.get("term", 0)), frozenset(status.get("peers_heard", ())))

        async with aiohttp.ClientSession(headers=headers) as http:
            answers = await asyncio.gather(*(ask(http, url) for url in peers.values()))
        return {str(self.peers.names.get(r, r)): a for r, a in zip(peers, answers, strict=True)}

    def _go_down(self, exc: BaseException) -> None:
        """The Raft loop failed: a replica that cannot make progress must not go on answering.
        Exit; the service manager restarts the node, which rebuilds itself from DATA_DIR."""
        log.error("node %s: Raft loop failed (%s: %s); exiting for a restart from %s",
                  self.config.name, type(exc).__name__, exc, self.config.data_dir)  # fmt: skip
        with contextlib.suppress(Exception):
            if self.stats is not None:
                self.stats.flush()
        os._exit(EXIT_RAFT_FAILED)

    async def hand_off_leadership(self, timeout: float = HANDOFF_TIMEOUT) -> bool:
        """If this node leads, hand leadership to the most caught-up voter and wait until it
        took over (True), so clients see a short redirect instead of an election timeout."""
        replica = self.replica
        if replica is None or not replica.node.is_leader:
            return True
        status = replica.node.status()
        voters = [v for v in status.conf.voters if v != replica.id]
        if not voters:
            return False
        target = max(voters, key=lambda v: (status.match.get(v, 0), -v))
        replica.node.transfer_leadership(target)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            if replica.node.status().role is not Role.LEADER:
                return True
            await asyncio.sleep(0.02)
        return False

    async def stop(self) -> None:
        handed = await self.hand_off_leadership()
        if not handed:
            log.warning("node %s: no peer took over leadership in time; exiting as leader", self.config.name)
        for task in self._tasks:
            task.cancel()
        if self.peers is not None:
            await self.peers.close(deregister=True)
        if self.api_runner is not None:
            await self.api_runner.cleanup()
        if self.fleet_client is not None:
            await self.fleet_client.close()
        if self.replica is not None:
            await self.replica.stop()
        if self.peer_server is not None:
            await self.peer_server.close()
        if self.stats is not None:
            with contextlib.suppress(OSError):
                self.stats.flush()
        if self.storage is not None:
            self.storage.close()


async def serve(config: NodeConfig, group: str) -> int:
    node = StandaloneNode(config, group)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await node.start()
    except (StorageError, DiscoveryError, OSError) as exc:
        print(f"controlplane node: cannot start: {exc}", file=sys.stderr, flush=True)
        await node.stop()
        return EXIT_DATA_DIR
    freeze_started_process()
    print(f"controlplane node {config.name}: serving (peers {config.url}, API http://{config.address}:"
          f"{config.api_port})", flush=True)  # fmt: skip
    await stop.wait()
    await node.stop()
    return 0


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    logging.basicConfig(level=env.get("LOG_LEVEL", "INFO").upper(), format="%(asctime)s %(name)s %(message)s")
    try:
        config = NodeConfig.from_env(env)
    except ConfigError as exc:
        print(f"controlplane node: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    lean_arrow()
    main_task = serve(config, env.get("CONTROLPLANE_GROUP", "fleet"))
    if config.event_loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            pass  # installed with requirements.txt; without it, asyncio serves the same
        else:
            return uvloop.run(main_task)
    return asyncio.run(main_task)
