"""The main job: a 3-replica Raft group as detached Ray actors on three virtual stations
(custom resources on one local Ray node), fleet commands flowing (UAV registrations), the
leader actor killed, a new leader elected and commands continuing, the killed replica
recovering from its disk, telemetry from every station's ingest actor applied on every
replica, and the RPC statistics exported to Parquet and summarised with pandas."""

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
    from controlplane.sync.synchronizer import DataSynchronizer

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

        client = ControlPlane(group, handles)  # exactly-once commands, leader cached between calls
        for station in STATIONS:
            await client.command({"type": "register_station", "station": station})

        async def write_batch(first: int, count: int) -> float:
            t = time.monotonic()
            for i in range(first, first + count):
                answer = await client.command(
                    {"type": "register_uav", "uav": f"uav-{i:04d}", "home_station": STATIONS[i % 3], "battery": 90}
                )
                if not answer["ok"]:
                    raise RuntimeError(f"register_uav uav-{i:04d} refused: {answer}")
                if (i - first + 1) % max(1, count // 4) == 0:
                    say(f"  {i - first + 1}/{count} UAVs registered")
            return count / (time.monotonic() - t)

        rate = await write_batch(0, writes)
        say(f"{writes} UAV registrations committed ({rate:.0f}/s, one at a time through the leader)")

        say(f"killing the leader actor (replica {leader}); Ray will restart it")
        ray.kill(handles[leader], no_restart=False)
        t = time.monotonic()
        new_leader = await find_leader({k: h for k, h in handles.items() if k != leader}, timeout=30)
        failover = time.monotonic() - t
        say(f"replica {new_leader} leads after {failover:.2f}s")
        await write_batch(writes, writes)
        seen = {u["id"] for u in await client.query("uavs")}
        missing = [i for i in range(2 * writes) if f"uav-{i:04d}" not in seen]
        if missing:
            raise RuntimeError(f"acknowledged registrations missing after failover: {missing[:10]}")
        say(f"all {2 * writes} acknowledged registrations read back linearizably from the new leader")

        t = time.monotonic()
        while True:
            try:
                st = await handles[leader].status.remote()
            except ray.exceptions.ActorUnavailableError:  # Ray is still restarting it
                st = {"uavs": None}
            if st["uavs"] == 2 * writes:
                break
            if time.monotonic() - t > 30:
                raise RuntimeError(f"restarted replica {leader} did not catch up: {st}")
            await asyncio.sleep(0.1)
        say(f"restarted replica {leader} recovered {st['recovered_entries']} log entries from its disk and caught up")

        telemetry = await send_telemetry(group, 2 * writes)
        say(
            f"telemetry: {telemetry['reports']} reports from {len(STATIONS)} station ingest actors, "
            f"{telemetry['accepted']} applied, {telemetry['duplicate']} duplicates dropped"
        )
        report = await DataSynchronizer(client).compare_digests()
        if not report.ok or report.missing:
            raise RuntimeError(f"replica digests differ or are missing at index {report.index}: {report}")
        say(f"all {len(report.digests)} replicas hold identical tables at log index {report.index} (digests compared)")

        exports = await asyncio.gather(*(h.flush_stats.remote() for h in handles.values()))
        return {
            "group": group,
            "first_leader": leader,
            "new_leader": new_leader,
            "failover_s": round(failover, 2),
            "writes": 2 * writes,
            "telemetry": telemetry,
            "digest_index": report.index,
            "exports": exports,
        }
    finally:
        for h in handles.values():
            ray.kill(h, no_restart=True)
        await discovery.close()


async def send_telemetry(group: str, uavs: int) -> dict[str, Any]:
    """Each station's ingest actor reports its UAVs twice, and repeats one batch (as a radio
    link might): the repeat must be dropped as duplicates."""
    import ray

    from controlplane.actors import start_ingest

    ingests = {s: start_ingest(group, s) for s in STATIONS}
    reports = 0
    answers = []
    for round_ in range(2):
        for k, station in enumerate(STATIONS):
            batch = [
                {"uav": f"uav-{i:04d}", "time": 1_000.0 + round_, "seq": round_, "lat": 47.0 + i / 1e4, "lon": 8.5}
                for i in range(k, uavs, len(STATIONS))
            ]
            repeats = 2 if round_ == 1 and k == 0 else 1
            for _ in range(repeats):
                answers.append(ingests[station].report.remote(batch, wait=True))
                reports += len(batch)
    results = await asyncio.gather(*answers)
    applied = [entry for r in results for entry in r["applied"]]
    seen: dict[int, dict[str, Any]] = {a["index"]: a for a in applied}  # batches may share an entry
    totals = {k: sum(a[k] for a in seen.values()) for k in ("accepted", "stale", "duplicate")}
    for ingest in ingests.values():
        ray.kill(ingest, no_restart=True)
    return {"reports": reports, **totals}


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
            f"done: {result['writes']} registrations, leader {result['first_leader']} killed, "
            f"replica {result['new_leader']} took over in {result['failover_s']}s; {where}"
        )
    finally:
        ray.shutdown()
        if args.data_dir is None:
            shutil.rmtree(data_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
