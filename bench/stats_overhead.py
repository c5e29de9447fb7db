"""Cost of recording every RPC attempt as an Arrow row (and flushing to Parquet).

    python -m bench.stats_overhead [--requests N] [--json]
    python -m bench.stats_overhead --w2 [--rounds 3] [--seconds 6] [--json]

Per attempt: sends the same heartbeat batches through RaftRPCClient over the in-memory
transport with only the built-in aggregator, then with ArrowStatsWriter added, in one run;
reports the extra microseconds per attempt (the in-memory transport makes the hook's share
visible).

--w2: issue 14's goal, the statistics' share of W2 (bench.compare's 64 writers on 3 Ray
replicas). The share: the attempts per write the replicas made in W2 (their RPC counters)
times the extra cost of an attempt with Arrow rows (measured as above, in the same run),
over the three replicas' CPU per write (/proc). Beside it, W2 on a group deployed with
RPC statistics (the default) and on one without (`deploy(rpc_stats=False)`), alternated
`--rounds` times in one Ray session: each round's writes/s and replicas' CPU per write and
their medians (this VM's run-to-run noise, ~10 %, is larger than the goal, so the share
above is the verdict's measure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from typing import Any

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


GOAL_OVERHEAD = 0.03  # issue 14: the statistics cost at most 3 % of W2
REPLICAS = ("leader", "follower 1", "follower 2")


def w2_share(rounds: int, seconds: float, requests: int, clients: int = 64) -> dict[str, Any]:
    """W2 with and without RPC statistics, alternated in one Ray session; the per-attempt cost
    measured as without --w2, over `requests` attempts."""
    import ray

    from bench.compare_ours import STATIONS, _run

    ray.init(address="local", include_dashboard=False, resources={f"station:{s}": 1 for s in STATIONS},
             logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
    runs: dict[str, list[dict[str, Any]]] = {"on": [], "off": []}
    try:
        with tempfile.TemporaryDirectory() as d:
            for r in range(rounds):
                for side in ("on", "off") if r % 2 == 0 else ("off", "on"):  # neither always goes first
                    w2 = asyncio.run(_run(["W2"], clients, seconds, f"{d}/{side}{r}", {}, rpc_stats=side == "on"))["W2"]
                    cpu = sum(w2["cpu_us_per_op"].get(name, 0.0) for name in REPLICAS)
                    runs[side].append({
                        "writes_per_s": w2["ops_per_s"], "replica_cpu_us_per_write": round(cpu, 1),
                        "attempts_per_write": w2["rpc_attempts_per_op"],
                    })  # fmt: skip
                    print(f"round {r + 1} statistics {side:>3}: {w2['ops_per_s']:>8,.0f} writes/s, "
                          f"replicas' CPU {cpu:6.1f} us per write, {w2['rpc_attempts_per_op']:.3f} "
                          "peer RPC attempts per write", flush=True)  # fmt: skip
            base = asyncio.run(per_attempt_us(requests, False, d))
            arrow = asyncio.run(per_attempt_us(requests, True, d))
    finally:
        ray.shutdown()
    median = {side: {k: statistics.median(run[k] for run in rs) for k in runs["on"][0]} for side, rs in runs.items()}
    attempt_us = max(arrow - base, 0.0)
    stats_us_per_write = median["on"]["attempts_per_write"] * attempt_us
    share = stats_us_per_write / median["on"]["replica_cpu_us_per_write"]
    return {
        "rounds": runs,
        "median": median,
        "arrow_us_per_attempt": round(attempt_us, 2),
        "stats_us_per_write": round(stats_us_per_write, 2),
        "share": round(share, 4),
        "on_off_cpu_ratio": round(
            median["on"]["replica_cpu_us_per_write"] / median["off"]["replica_cpu_us_per_write"], 3
        ),
        "on_off_writes_ratio": round(median["on"]["writes_per_s"] / median["off"]["writes_per_s"], 3),
        "goal": GOAL_OVERHEAD,
        "met": share <= GOAL_OVERHEAD,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=100_000)
    p.add_argument("--w2", action="store_true", help="the statistics' share of W2 on Ray replicas")
    p.add_argument("--rounds", type=int, default=3, help="--w2: alternations of with and without")
    p.add_argument("--seconds", type=float, default=6.0, help="--w2: seconds of W2 per run")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.requests < 1:
        p.error("--requests must be positive")
    if args.rounds < 1 or not args.seconds > 0:
        p.error("--rounds and --seconds must be positive")
    if args.w2:
        share = w2_share(args.rounds, args.seconds, args.requests)
        if args.json:
            print(json.dumps(share))
        else:
            verdict = "met" if share["met"] else "missed"
            print(f"statistics' share of W2: {share['median']['on']['attempts_per_write']:.3f} attempts per write x "
                  f"{share['arrow_us_per_attempt']} us per attempt = {share['stats_us_per_write']} us of "
                  f"{share['median']['on']['replica_cpu_us_per_write']} us of replica CPU per write: "
                  f"{share['share']:.2%} (goal <= {GOAL_OVERHEAD:.0%}: {verdict}); with/without, medians of "
                  f"{args.rounds}: CPU per write x{share['on_off_cpu_ratio']}, "
                  f"writes/s x{share['on_off_writes_ratio']}")  # fmt: skip
        return
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
