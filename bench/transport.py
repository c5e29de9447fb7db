"""Transport benchmark: time to deliver a batch and AppendEntries throughput, side by side.

    python -m bench.transport [--requests N] [--json]

Measures each transport in the same run against a server on 127.0.0.1 whose handler
decodes the batch (as a replica would). Times run until the handler has the batch: a
stream's send returns before that, HTTP's after. In-memory is the floor (no network at all).
With --ray (the default) the Ray actor-call transport runs too, against an actor on a
local Ray instance started for the run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from controlplane.raft.codec import decode_batch, encode_batch
from controlplane.raft.messages import AppendEntries, Entry, Heartbeat
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.http import HTTPTransport, HTTPTransportServer
from controlplane.rpc.ray import RayTransport
from controlplane.rpc.stream import StreamTransport
from controlplane.rpc.transport import InMemoryNetwork


class _Receiver:
    """The server's handler: decodes each batch (as a replica would) and counts it, so a
    batch is timed until it was delivered, whether or not its transport waits for that."""

    def __init__(self, counted: bool = True) -> None:
        self.counted = counted  # False: the batches go elsewhere (an actor call returns once it has them)
        self.count = 0
        self.reached: asyncio.Event = asyncio.Event()
        self.target = 0

    async def __call__(self, body: bytes) -> None:
        decode_batch(body)
        self.count += 1
        if self.count >= self.target:
            self.reached.set()

    async def until(self, count: int) -> None:
        if self.counted and self.count < count:
            self.target = count
            self.reached.clear()
            await asyncio.wait_for(self.reached.wait(), 30)


async def measure(kind: str, requests: int, concurrency: int, entries: int) -> dict[str, Any]:
    receiver = _Receiver(counted=kind != "ray")
    if kind == "ray":
        server = _RayServer()
        transport = RayTransport(_NAMESPACE)
    elif kind in ("http", "stream"):
        server: Any = HTTPTransportServer()
        transport: Any = HTTPTransport(RPCConfig()) if kind == "http" else StreamTransport(RPCConfig())
    else:
        net = InMemoryNetwork()
        server, transport = net.server("mem://bench"), net.transport()
    await server.start(receiver)
    try:
        heartbeat = encode_batch([Heartbeat(1, 2, 7, 100)])
        for _ in range(50):  # warm the connection pool
            await transport.send(server.address, heartbeat, 5.0)
        await receiver.until(50)
        latencies = []
        for _ in range(requests):
            had = receiver.count
            t = time.perf_counter()
            await transport.send(server.address, heartbeat, 5.0)
            await receiver.until(had + 1)
            latencies.append((time.perf_counter() - t) * 1000)
        latencies.sort()
        batch = tuple(Entry(7, i, b"x" * 100) for i in range(entries))
        body = encode_batch([AppendEntries(1, 2, 7, 0, 0, batch, 0)])
        sent = 0
        before = receiver.count
        start = time.perf_counter()

        async def worker() -> None:
            nonlocal sent
            while sent < requests:
                sent += 1
                await transport.send(server.address, body, 5.0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await receiver.until(before + sent)
        elapsed = time.perf_counter() - start
        return {
            "transport": kind,
            "delivery_p50_ms": round(statistics.median(latencies), 3),
            "delivery_p99_ms": round(latencies[int(len(latencies) * 0.99) - 1], 3),
            "append_entries_per_s": round(sent * entries / elapsed),
            "append_requests_per_s": round(sent / elapsed),
            "append_body_bytes": len(body),
        }
    finally:
        await transport.close()
        await server.close()


_NAMESPACE = "uav-bench"


class _RayServer:
    """A receiving actor standing in for a replica: decodes each batch."""

    address = "bench-receiver"

    async def start(self, handler: Any) -> None:
        import ray

        @ray.remote(num_cpus=0.01)
        class Receiver:
            async def receive(self, body: bytes) -> None:
                decode_batch(body)

        self.actor = Receiver.options(name=self.address, namespace=_NAMESPACE).remote()  # type: ignore[attr-defined]

    async def close(self) -> None:
        import ray

        ray.kill(self.actor)


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    kinds = ["memory", "http", "stream"] + (["ray"] if args.ray else [])
    return [await measure(k, args.requests, args.concurrency, args.entries) for k in kinds]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--entries", type=int, default=64, help="entries per AppendEntries")
    p.add_argument("--no-ray", dest="ray", action="store_false", help="skip the Ray actor-call transport")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if min(args.requests, args.concurrency, args.entries) < 1:
        p.error("--requests, --concurrency and --entries must be positive")
    if args.ray:
        import ray

        ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False)
    try:
        rows = asyncio.run(main_async(args))
    finally:
        if args.ray:
            ray.shutdown()
    if args.json:
        print(json.dumps({"results": rows}))
        return
    fastest = min((r for r in rows if r["transport"] != "memory"), key=lambda r: r["delivery_p50_ms"])
    print(f"{'transport':<10} {'delivery p50 ms':>15} {'p99 ms':>8} {'entries/s':>12} {'batches/s':>10}")
    for r in rows:
        print(
            f"{r['transport']:<10} {r['delivery_p50_ms']:>15} {r['delivery_p99_ms']:>8} "
            f"{r['append_entries_per_s']:>12,} {r['append_requests_per_s']:>10,}"
        )
    others = [r for r in rows if r["transport"] not in ("memory", fastest["transport"])]
    for r in others:
        ratio = r["delivery_p50_ms"] / fastest["delivery_p50_ms"]
        print(f"{fastest['transport']} delivers a batch {ratio:.1f}x sooner than {r['transport']}")


if __name__ == "__main__":
    main()
