"""Heartbeats while a big fleet is snapshotted and installed.

    python -m bench.snapshot_pause [--count 100000] [--json]

Three replicas (RaftNode over DiskStorage in a temporary directory, the fleet state behind
its change feed, the RPC client over the in-memory transport, all in this process and on one
event loop) each hold N UAVs and N missions. Measured: the longest silence between two
messages a follower receives from the leader, and the event loop's longest stall, while
(1) the leader writes a snapshot of its state (with the longest time one writer, a write at
a time, waited meanwhile: a replica applies nothing while its state is captured) and (2) a
new member installs the leader's snapshot. In production each replica is a process of its
own; here they share one event loop and one GIL, so one snapshot job runs at a time. The goal (issue 11): no silence
longer than a third of the election timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.snapshot import build
from controlplane.node import RaftNode
from controlplane.persist import DiskStorage
from controlplane.raft import RaftConfig
from controlplane.raft.codec import decode_batch
from controlplane.raft.messages import AppendEntries, ConfChange, ConfChangeOp, Heartbeat
from controlplane.rpc.client import Peer, RaftRPCClient
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.transport import InMemoryNetwork
from controlplane.state.fleet import FleetState, encode
from controlplane.sync.changefeed import ChangeFeed

TICK = 0.05
ELECTION_TICKS = 10


class Gaps:
    """Longest silence between leader messages, per receiver, inside a window."""

    def __init__(self) -> None:
        self.last: dict[int, float] = {}
        self.longest: dict[int, float] = {}
        self.open = False

    def saw(self, node: int) -> None:
        now = time.perf_counter()
        if self.open and node in self.last:
            self.longest[node] = max(self.longest.get(node, 0.0), now - self.last[node])
        self.last[node] = now

    def start(self) -> None:
        self.last, self.longest, self.open = {}, {}, True

    def stop(self) -> dict[int, float]:
        self.open = False
        return dict(self.longest)


async def loop_lag(stalls: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(0.01)
        stalls.append(loop.time() - started - 0.01)


async def run(count: int, root: Path) -> dict[str, Any]:
    net = InMemoryNetwork()
    rpc = RPCConfig(timeout=0.5, max_retries=2, retry_delay=0.02)
    gaps = Gaps()
    nodes: dict[int, RaftNode] = {}

    async def start(nid: int, state: FleetState, founders: list[int] | None) -> RaftNode:
        storage = DiskStorage(root / str(nid), cluster="bench", node_id=nid)
        if founders:
            storage.bootstrap(founders)
        client = RaftRPCClient(nid, net.transport(), rpc)
        node = RaftNode(
            # no log kept behind a snapshot: a new member must install one
            RaftConfig(node_id=nid, election_ticks=ELECTION_TICKS, seed=nid, compaction_keep=0),
            storage,
            ChangeFeed(state),
            lambda m: client.post(Peer(m.dst, f"mem://{m.dst}"), m),
            tick_interval=TICK,
            snapshot_every=40,
        )

        async def deliver(body: bytes) -> None:
            for m in decode_batch(body):
                if isinstance(m, AppendEntries | Heartbeat):
                    gaps.saw(nid)
                node.receive(m)

        await net.server(f"mem://{nid}").start(deliver)
        await node.start()
        nodes[nid] = node
        return node

    print(f"[bench] building 3 fleets of {count} UAVs and {count} missions", flush=True)
    for nid in (1, 2, 3):
        await start(nid, build(count, settled=True), [1, 2, 3])
    deadline = time.perf_counter() + 10
    while not any(n.is_leader for n in nodes.values()):
        if time.perf_counter() > deadline:
            raise SystemExit("no leader")
        await asyncio.sleep(0.01)
    leader = next(n for n in nodes.values() if n.is_leader)
    for node in nodes.values():  # replicas are processes of their own in production: one at a time here
        if node is not leader:
            node.snapshot_every = 10**9
    stalls: list[float] = []
    stop = asyncio.Event()
    lag = asyncio.get_running_loop().create_task(loop_lag(stalls, stop))

    async def until(condition: Any, timeout: float) -> float:
        started = time.perf_counter()
        while not condition():
            if time.perf_counter() - started > timeout:
                raise SystemExit("timed out")
            await asyncio.sleep(0.01)
        return time.perf_counter() - started

    # (1) the leader snapshots its 100k fleet: committing 40 entries makes one due. One
    # writer goes on meanwhile, a write at a time: how long the snapshot holds writes back.
    print("[bench] the leader writes a snapshot of the whole fleet", flush=True)
    gaps.start()
    stalls.clear()
    started = time.perf_counter()
    write_seconds: list[float] = []

    def saved() -> bool:
        return leader.core is not None and leader.core.log.snapshot.meta.index > 0

    while not saved() or len(write_seconds) < 45:
        if time.perf_counter() - started > 60:
            raise SystemExit("timed out")
        began = time.perf_counter()
        await leader.propose(encode({"type": "register_station", "station": f"extra-{len(write_seconds)}"}))
        write_seconds.append(time.perf_counter() - began)
        if leader.applied_index >= 40:
            leader.snapshot_every = 10**9  # that one snapshot only: (2) measures an install alone
    took = time.perf_counter() - started
    await asyncio.sleep(0.2)
    save = {
        "gaps_ms": gaps.stop(),
        "loop_stall_ms": max(stalls, default=0.0),
        "seconds": took,
        "longest_write": max(write_seconds),
    }

    # (2) a new member installs the leader's snapshot: one more covers the writes made
    # during (1), or the install's measure would include replaying them (applied in one go)
    through = leader.applied_index
    leader.snapshot_every = 1
    await until(lambda: leader.core is not None and leader.core.log.snapshot.meta.index >= through, 60)
    leader.snapshot_every = 10**9
    print("[bench] a new member installs the leader's snapshot", flush=True)
    learner = await start(4, FleetState(), None)
    gaps.start()
    stalls.clear()
    await leader.change_membership(ConfChange(ConfChangeOp.ADD_LEARNER, 4), timeout=10)
    took = await until(lambda: len(learner.sm.state.uavs) == count, 120)  # type: ignore[attr-defined]
    await asyncio.sleep(0.2)
    install = {"gaps_ms": gaps.stop(), "loop_stall_ms": max(stalls, default=0.0), "seconds": took}
    stop.set()
    await lag
    for node in nodes.values():
        await node.stop()
    budget = TICK * ELECTION_TICKS / 3

    def summary(phase: dict[str, Any]) -> dict[str, Any]:
        worst = max(phase["gaps_ms"].values(), default=0.0)
        out = {
            "longest_silence_ms": round(worst * 1000, 1),
            "loop_stall_ms": round(phase["loop_stall_ms"] * 1000, 1),
            "seconds": round(phase["seconds"], 2),
            "within_budget": worst <= budget,
        }
        if "longest_write" in phase:
            out["longest_write_ms"] = round(phase["longest_write"] * 1000, 1)
        return out

    return {
        "uavs": count,
        "missions": count,
        "budget_ms": round(budget * 1000, 1),
        "snapshot_save": summary(save),
        "snapshot_install": summary(install),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.count < 1:
        p.error("--count must be positive")
    with tempfile.TemporaryDirectory() as tmp:
        result = asyncio.run(run(args.count, Path(tmp)))
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key:<18} {value}")


if __name__ == "__main__":
    main()
