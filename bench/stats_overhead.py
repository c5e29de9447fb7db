"""Cost of recording every RPC attempt as an Arrow row (and flushing to Parquet).

    python -m bench.stats_overhead [--requests N] [--json]

Sends the same heartbeat batches through RaftRPCClient over the in-memory transport with
only the built-in aggregator, then with ArrowStatsWriter added, in one run; reports the
extra microseconds per attempt (the in-memory transport makes the hook's share visible).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

from controlplane.raft.messages import Heartbeat
from controlplane.rpc.client import Peer, RaftRPCClient
from controlplane.rpc.stats import ArrowStatsWriter
from controlplane.rpc.transport import InMemoryNetwork


async def per_attempt_us(requests: int, with_arrow: bool, directory: str) -> float:
    net = InMemoryNetwork()

    async def sink(body: bytes) -> None:
        return None

    await net.server("mem://2").start(sink)
    hooks = [ArrowStatsWriter(directory, node="bench", flush_rows=50_000)] if with_arrow else []
    client = RaftRPCClient(1, net.transport(), hooks=hooks)
    peer, msg = Peer(2, "mem://2"), [Heartbeat(1, 2, 3, 4)]
    start = time.perf_counter()
    for _ in range(requests):
        await client.send(peer, msg)
    if hooks:
        hooks[0].close()  # the flush is part of the cost
    return (time.perf_counter() - start) / requests * 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.requests < 1:
        p.error("--requests must be positive")
    with tempfile.TemporaryDirectory() as d:
        base = asyncio.run(per_attempt_us(args.requests, False, d))
        arrow = asyncio.run(per_attempt_us(args.requests, True, d))
    result = {
        "baseline_us": round(base, 2),
        "with_arrow_us": round(arrow, 2),
        "overhead_us": round(arrow - base, 2),
        "ratio": round(arrow / base, 2),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"per attempt without Arrow stats: {result['baseline_us']} us")
        print(
            f"per attempt with Arrow stats:    {result['with_arrow_us']} us "
            f"(+{result['overhead_us']} us, x{result['ratio']})"
        )


if __name__ == "__main__":
    main()
