"""The main job: a 3-replica Raft group as detached Ray actors on three virtual stations
(custom resources on one local Ray node), writes flowing, the leader actor killed, a new
leader elected and writes continuing, the killed replica recovering from its disk, and the
RPC statistics exported to Parquet and summarised with pandas."""

from __future__ import annotations

import argparse
import asyncio
import logging
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

STATIONS = ["alpha", "bravo", "charlie"]


def say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


async def run_demo(data_dir: Path, writes: int) -> dict[str, Any]:
    import ray

    from controlplane.actors import find_leader
    from controlplane.client import ControlPlane
    from controlplane.controller import Controller, RayNodeStations
    from controlplane.placement.discovery import create_service_discovery

    group = f"demo{int(time.time()) % 100000}"
    discovery = create_service_discovery()  # DISCOVERY_TYPE; embedded by default
    controller = Controller(
        group, 3, str(data_dir), discovery, stations=RayNodeStations(), cluster_token=secrets.token_urlsafe(24)
    )
    handles = await controller.deploy()
    placement, _ = await controller.planner.current()
    say(f"deployed group {group!r}: replica -> station {placement} (map in {type(discovery).__name__})")
    say(f"replicas keep their logs under {data_dir}")
    try:
        started = time.monotonic()
        leader = await find_leader(handles, timeout=60)
        say(f"replica {leader} leads (elected {time.monotonic() - started:.1f}s after deploy)")

        client = ControlPlane(group, handles)  # exactly-once writes, leader cached between calls

        async def write_batch(first: int, count: int) -> float:
            t = time.monotonic()
            for i in range(first, first + count):
                await client.put(f"uav-{i:04d}", {"battery": 100 - i % 100})
                if (i - first + 1) % max(1, count // 4) == 0:
                    say(f"  {i - first + 1}/{count} writes committed")
            return count / (time.monotonic() - t)

        rate = await write_batch(0, writes)
        say(f"{writes} writes committed ({rate:.0f}/s, one at a time through the leader)")

        say(f"killing the leader actor (replica {leader}); Ray will restart it")
        ray.kill(handles[leader], no_restart=False)
        t = time.monotonic()
        new_leader = await find_leader({k: h for k, h in handles.items() if k != leader}, timeout=30)
        failover = time.monotonic() - t
        say(f"replica {new_leader} leads after {failover:.2f}s")
        await write_batch(writes, writes)
        missing = [i for i in range(2 * writes) if await handles[new_leader].read.remote(f"uav-{i:04d}") is None]
        if missing:
            raise RuntimeError(f"acknowledged writes missing after failover: {missing[:10]}")
        say(f"all {2 * writes} acknowledged writes read back linearizably from the new leader")

        t = time.monotonic()
        while True:
            st = await handles[leader].status.remote()
            if st["keys"] == 2 * writes:
                break
            if time.monotonic() - t > 30:
                raise RuntimeError(f"restarted replica {leader} did not catch up: {st}")
            await asyncio.sleep(0.1)
        say(f"restarted replica {leader} recovered {st['recovered_entries']} log entries from its disk and caught up")

        exports = await asyncio.gather(*(h.flush_stats.remote() for h in handles.values()))
        return {
            "group": group,
            "first_leader": leader,
            "new_leader": new_leader,
            "failover_s": round(failover, 2),
            "writes": 2 * writes,
            "exports": exports,
        }
    finally:
        for h in handles.values():
            ray.kill(h, no_restart=True)
        await discovery.close()


def summarise_stats(data_dir: Path) -> None:
    import pandas as pd

    from analysis.rpc_stats import load_rpc_stats

    df: pd.DataFrame = load_rpc_stats(data_dir)
    say(f"RPC statistics: {len(df)} attempts in {df['source'].nunique()} replicas' Parquet files")
    table = df.groupby(["method", "outcome"]).agg(
        attempts=("latency_ms", "size"),
        p50_ms=("latency_ms", "median"),
        p99_ms=("latency_ms", lambda s: s.quantile(0.99)),
    )
    print(table.round(3).to_string(), flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane demo", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, help="replicas' logs and RPC stats (default: a temporary directory)")
    p.add_argument("--writes", type=int, default=100, help="writes before and after the leader is killed")
    args = p.parse_args(argv)
    if args.writes < 1:
        p.error("--writes must be positive")
    data_dir = args.data_dir or Path(tempfile.mkdtemp(prefix="uav-demo-"))
    data_dir.mkdir(parents=True, exist_ok=True)

    import ray

    say("starting local Ray with three virtual stations (alpha, bravo, charlie)")
    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=2,
        resources={f"station:{s}": 1 for s in STATIONS},
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    try:
        result = asyncio.run(run_demo(data_dir, args.writes))
        summarise_stats(data_dir)
        where = f"stats and logs in {data_dir}" if args.data_dir else "pass --data-dir DIR to keep stats and logs"
        say(
            f"done: {result['writes']} writes, leader {result['first_leader']} killed, "
            f"replica {result['new_leader']} took over in {result['failover_s']}s; {where}"
        )
    finally:
        ray.shutdown()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
