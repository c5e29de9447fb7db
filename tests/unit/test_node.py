"""RaftNode, the asyncio driver, on an in-memory network through the real RPC client."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from controlplane.node import MemoryNodeStorage, RaftNode
from controlplane.persist import DiskStorage
from controlplane.raft import NotLeaderError, RaftConfig
from controlplane.raft.codec import decode_batch
from controlplane.raft.messages import Entry
from controlplane.rpc.client import Peer, RaftRPCClient
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.transport import InMemoryNetwork

RPC = RPCConfig(timeout=0.1, max_retries=1, retry_delay=0.01)


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
    st = MemoryNodeStorage()
    st.bootstrap(ids)
    return st


class Cluster:
    def __init__(self, size: int, snapshot_every: int = 10_000) -> None:
        self.net = InMemoryNetwork()
        self.ids = list(range(1, size + 1))
        self.storage = {i: founder_storage(self.ids) for i in self.ids}
        self.nodes: dict[int, RaftNode] = {}
        self.kvs: dict[int, KV] = {}
        self.clients: dict[int, RaftRPCClient] = {}
        self.snapshot_every = snapshot_every

    async def start(self, nid: int, storage=None) -> RaftNode:
        client = RaftRPCClient(nid, self.net.transport(), RPC)
        kv = KV()
        node = RaftNode(
            RaftConfig(node_id=nid, seed=nid),
            storage or self.storage[nid],
            kv,
            lambda m: client.post(Peer(m.dst, f"mem://{m.dst}"), m),
            tick_interval=0.01,
            snapshot_every=self.snapshot_every,
            persist_in_thread=storage is not None,
        )

        async def handler(body: bytes) -> None:
            for m in decode_batch(body):
                node.receive(m)

        await self.net.server(f"mem://{nid}").start(handler)
        self.net.down.discard(f"mem://{nid}")
        await node.start()
        self.nodes[nid], self.kvs[nid], self.clients[nid] = node, kv, client
        return node

    async def stop(self, nid: int) -> None:
        self.net.down.add(f"mem://{nid}")
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


def run(coro):
    asyncio.run(asyncio.wait_for(coro, 60))


def test_writes_replicate_and_the_leader_answers_with_the_result():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            results = await asyncio.gather(*(leader.propose(b"k%d=v%d" % (i, i)) for i in range(50)))
            assert results == sorted(results) and len(set(results)) == 50  # log indices, in order
            await wait_for(lambda: all(len(kv.data) == 50 for kv in c.kvs.values()))
        finally:
            await c.close()

    run(go())


def test_follower_refuses_with_a_leader_hint_and_serves_linearizable_reads():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            leader = await c.leader()
            follower = next(n for n in c.nodes.values() if n is not leader)
            await wait_for(lambda: follower.status().leader_id == leader.id)
            with pytest.raises(NotLeaderError) as info:
                await follower.propose(b"x=1")
            assert info.value.leader_hint == leader.id
            await leader.propose(b"x=2")
            await follower.read_barrier()
            assert c.kvs[follower.id].data["x"] == "2"
        finally:
            await c.close()

    run(go())


def test_leader_killed_new_leader_keeps_every_acknowledged_write():
    async def go():
        c = Cluster(3)
        for i in c.ids:
            await c.start(i)
        try:
            old = await c.leader()
            for i in range(20):
                await old.propose(b"a%d=%d" % (i, i))
            await c.stop(old.id)
            new = await c.leader()
            assert new.id != old.id
            await new.propose(b"after=1")
            assert all(f"a{i}" in c.kvs[new.id].data for i in range(20))
            # The old leader restarts from its storage and catches up.
            await c.start(old.id)
            await wait_for(lambda: c.kvs[old.id].data.get("after") == "1")
        finally:
            await c.close()

    run(go())


def test_snapshots_compact_and_a_restarted_node_recovers_from_disk(tmp_path):
    async def go():
        c = Cluster(3, snapshot_every=25)
        disks = {}
        for i in c.ids:
            disk = DiskStorage(tmp_path / f"n{i}", cluster="t", node_id=i)
            disk.bootstrap(c.ids)
            disks[i] = disk
            await c.start(i, storage=disk)
        try:
            leader = await c.leader()
            for i in range(60):
                await leader.propose(b"k%d=%d" % (i, i))
            victim = next(i for i in c.ids if i != leader.id)
            await wait_for(lambda: len(c.kvs[victim].data) == 60)
            await c.stop(victim)
            for i in range(60, 80):
                await leader.propose(b"k%d=%d" % (i, i))
            restarted = await c.start(victim, storage=DiskStorage(tmp_path / f"n{victim}", cluster="t", node_id=victim))
            assert restarted.applied_index >= 50  # state came back from its own snapshot
            await wait_for(lambda: len(c.kvs[victim].data) == 80)
            assert list((tmp_path / f"n{leader.id}" / "snap").glob("snapshot-*"))
        finally:
            await c.close()

    run(go())
