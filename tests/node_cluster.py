"""A cluster of RaftNodes wired through RaftRPCClient over the in-memory or HTTP transport."""

from __future__ import annotations

import asyncio
import contextlib
import socket

from controlplane.node import RaftNode, run_in_thread, run_inline
from controlplane.raft import RaftConfig
from controlplane.raft.codec import decode_batch
from controlplane.raft.messages import Entry
from controlplane.raft.storage import MemoryStorage
from controlplane.rpc.client import Peer, RaftRPCClient
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.http import HTTPTransportServer
from controlplane.rpc.stream import StreamTransport
from controlplane.rpc.transport import InMemoryNetwork

RPC = RPCConfig(timeout=0.1, max_retries=1, retry_delay=0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class KV:
    def __init__(self) -> None:
        self.data: dict[str, str] = {}

    def apply(self, entry: Entry) -> int:
        k, _, v = entry.data.decode().partition("=")
        self.data[k] = v
        return entry.index

    def snapshot(self) -> bytes:
        return "\n".join(f"{k}={v}" for k, v in sorted(self.data.items())).encode()

    def restore(self, data: bytes) -> None:
        self.data = dict(line.split("=", 1) for line in data.decode().splitlines() if line)


def founder_storage(ids):
    st = MemoryStorage()
    st.bootstrap(ids)
    return st


class Cluster:
    def __init__(
        self,
        size: int,
        snapshot_every: int = 10_000,
        http: bool = False,
        snapshot_bytes: int = 1 << 28,
        state_machine: type[KV] = KV,
    ) -> None:
        self.net = InMemoryNetwork()
        self.http = http
        self.servers: dict[int, HTTPTransportServer] = {}
        self.addresses = {i: (f"http://127.0.0.1:{free_port()}" if http else f"mem://{i}") for i in range(1, size + 1)}
        self.ids = list(range(1, size + 1))
        self.storage = {i: founder_storage(self.ids) for i in self.ids}
        self.nodes: dict[int, RaftNode] = {}
        self.kvs: dict[int, KV] = {}
        self.clients: dict[int, RaftRPCClient] = {}
        self.snapshot_every = snapshot_every
        self.snapshot_bytes = snapshot_bytes
        self.state_machine = state_machine

    async def start(self, nid: int, storage=None) -> RaftNode:
        transport = StreamTransport(RPC) if self.http else self.net.transport()
        client = RaftRPCClient(nid, transport, RPC)
        kv = self.state_machine()
        node = RaftNode(
            RaftConfig(node_id=nid, seed=nid),
            storage or self.storage[nid],
            kv,
            lambda m: client.post(Peer(m.dst, self.addresses[m.dst]), m),
            tick_interval=0.01,
            snapshot_every=self.snapshot_every,
            snapshot_bytes=self.snapshot_bytes,
            run_blocking=run_in_thread if storage is not None else run_inline,
        )

        async def handler(body: bytes) -> None:
            for m in decode_batch(body):
                node.receive(m)

        if self.http:
            server = HTTPTransportServer("127.0.0.1", int(self.addresses[nid].rsplit(":", 1)[1]))
            await server.start(handler)
            self.servers[nid] = server
        else:
            await self.net.server(f"mem://{nid}").start(handler)
            self.net.down.discard(f"mem://{nid}")
        await node.start()
        self.nodes[nid], self.kvs[nid], self.clients[nid] = node, kv, client
        return node

    async def stop(self, nid: int) -> None:
        self.net.down.add(f"mem://{nid}")
        if nid in self.servers:
            await self.servers.pop(nid).close()
        await self.nodes.pop(nid).stop()
        await self.clients.pop(nid).close()

    async def leader(self, timeout: float = 5.0) -> RaftNode:
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            leaders = [n for n in self.nodes.values() if n.is_leader]
            if len(leaders) == 1:
                return leaders[0]
            await asyncio.sleep(0.01)
        raise AssertionError("no single leader elected in time")

    async def close(self) -> None:
        for nid in list(self.nodes):
            with contextlib.suppress(Exception):
                await self.stop(nid)


async def wait_for(predicate, timeout=5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)
