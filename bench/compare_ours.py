"""Our side of bench/compare.py: 3 replicas on Ray (one per station), driven through the SDK.

W1/W2 write UAV records (update_uav with position, battery and velocity: ~140 bytes of
command, at least the peers' 100-byte values) through ControlPlane.command, one SDK client
per concurrent client (each has its own exactly-once session; all share the process's one
leader stream). W3 reads a UAV record with a linearizable query (ReadIndex on the leader).
W4 is bench.telemetry's path: station ingest actors coalesce Arrow batches and hand the
leader ObjectRefs; its latency is stricter than the peers' (report made → applied on every
replica, not one call's round trip)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from typing import Any

import numpy as np

from bench.loadgen import closed_loop
from bench.processes import CpuMeter, pids_named

STATIONS = ["alpha", "bravo", "charlie"]
KEYS = 1000


def write_command(n: int) -> dict[str, Any]:
    return {
        "type": "update_uav", "uav": f"uav-{n % KEYS:05d}", "lat": 47.0 + n % 997 * 1e-4, "lon": 8.0 + n % 991 * 1e-4,
        "alt": 120.5, "battery": 87.25, "vx": 3.5, "vy": -1.25, "vz": 0.0,
    }  # fmt: skip


def fdatasync_p50_ms(directory: str, calls: int = 200) -> float:
    """A small append made durable in `directory` (the replicas' disk), as a WAL write is."""
    path = os.path.join(directory, "fdatasync-probe")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        times = []
        for _ in range(calls):
            started = time.perf_counter()
            os.write(fd, b"x" * 300)
            os.fdatasync(fd)
            times.append(time.perf_counter() - started)
    finally:
        os.close(fd)
        os.remove(path)
    return round(float(np.percentile(times, 50)) * 1000, 3)


async def w1_breakdown(replicas: dict[int, Any], sdk: Any, data_dir: str, calls: int = 200) -> dict[str, float]:
    """Where a sequential write's time goes, as p50s measured now: a bare actor call to the
    leader (Ray's floor, now only on the control path), a round trip on the leader stream
    (a stale read: the SDK's hop without Raft), a linearizable read (that hop plus one
    heartbeat round to the followers), a write (that hop plus a replication round with the
    disk writes), and one small fdatasync on the replicas' disk (at least one is on a
    write's path: the follower's whose acknowledgement commits it)."""
    from controlplane.actors import find_leader
    from controlplane.leader_stream.connection import leader_stream

    leader = replicas[await find_leader(replicas, 10)]
    endpoint = await leader.client_endpoint.remote()
    stream = leader_stream(*endpoint)

    async def p50(call: Any) -> float:
        times = []
        for n in range(calls):
            started = time.perf_counter()
            await call(n)
            times.append(time.perf_counter() - started)
        return round(float(np.percentile(times, 50)) * 1000, 3)

    return {
        "actor_call_p50_ms": await p50(lambda n: leader.status.remote()),
        "stream_round_trip_p50_ms": await p50(lambda n: stream.query("uav", {"id": "uav-00000"}, "stale", 5.0)),
        "linearizable_read_p50_ms": await p50(lambda n: sdk.query("uav", {"id": f"uav-{n % KEYS:05d}"})),
        "write_p50_ms": await p50(lambda n: sdk.command(write_command(n))),
        "fdatasync_p50_ms": fdatasync_p50_ms(data_dir),
    }


def w2_ceiling(cpu_us_per_op: dict[str, float]) -> dict[str, Any]:
    """W2's rate if replication, the log, the disk and the leader stream cost nothing: every
    replica still applies every write (the state machine's CPU per write with the change
    feed, measured here and now by bench.apply) and the SDK clients still spend what they
    spent in W2, all on this machine's cores. No change to replication can go past it."""
    from bench.apply import run as apply_run

    apply_us = float(apply_run(commands=10_000, uavs=KEYS, feed=True)["cpu_us_per_command"])
    client_us = float(cpu_us_per_op["client (this process)"])
    cores = len(os.sched_getaffinity(0))
    return {
        "apply_us_per_write": apply_us, "replicas": len(STATIONS), "client_us_per_write": client_us, "cores": cores,
        "ops_per_s": round(cores * 1e6 / (len(STATIONS) * apply_us + client_us)),
    }  # fmt: skip


async def cpu_meter(replicas: dict[int, Any]) -> CpuMeter:
    """CPU per operation of the leader, each follower, Ray's own daemons and this process
    (the SDK clients)."""
    statuses = await asyncio.gather(*(h.status.remote() for h in replicas.values()))
    pids: dict[str, list[int]] = {}
    for s in sorted(statuses, key=lambda s: s["role"] != "leader"):
        pids["leader" if s["role"] == "leader" else f"follower {len(pids)}"] = [s["pid"]] if "pid" in s else []
    pids["ray (raylet, gcs)"] = pids_named("raylet") + pids_named("gcs_server")
    return CpuMeter(pids, own="client (this process)")


async def _run(
    workloads: list[str], clients: int, seconds: float, data_dir: str, w4: dict[str, Any], **deploy_options: Any
) -> dict[str, Any]:
    """The workloads on a group deployed in `data_dir` (deploy_options: deploy()'s keywords)."""
    import ray

    from controlplane.actors import deploy, find_leader
    from controlplane.client import ControlPlane

    results: dict[str, Any] = {}
    group = f"compare{os.getpid()}"
    replicas = deploy(group, STATIONS, data_dir, **deploy_options)
    try:
        await find_leader(replicas, 60)
        sdks = [ControlPlane(group, replicas) for _ in range(clients)]
        await sdks[0].command({"type": "register_station", "station": "alpha"})
        for start in range(0, KEYS, clients):  # one command in flight per SDK client (its session)
            await asyncio.gather(
                *(
                    sdk.command({"type": "register_uav", "uav": f"uav-{i:05d}", "home_station": "alpha"})
                    for sdk, i in zip(sdks, range(start, min(KEYS, start + clients)), strict=False)
                )
            )

        def writer(sdk_count: int) -> Any:
            async def write(c: int, n: int) -> int:
                answer = await sdks[c].command(write_command(c + n * sdk_count))
                if not answer["ok"]:
                    raise RuntimeError(answer)
                return 1

            return write

        async def read(c: int, n: int) -> int:
            await sdks[c].query("uav", {"id": f"uav-{(c + n * clients) % KEYS:05d}"})
            return 1

        meter = await cpu_meter(replicas)

        async def attempts() -> int:
            """Peer RPC attempts (batches sent) of every replica so far."""
            flushed = await asyncio.gather(*(h.flush_stats.remote() for h in replicas.values()))
            return sum(f["statistics"]["attempts"] for f in flushed)

        async def measured(operation: Any, concurrency: int) -> dict[str, Any]:
            before = await attempts()
            meter.start()
            result = await closed_loop(operation, concurrency, seconds)
            result["cpu_us_per_op"] = meter.per_op(result["ops"])
            result["run_queue_wait_us_per_op"] = meter.wait_per_op(result["ops"])
            result["rpc_attempts_per_op"] = round((await attempts() - before) / max(result["ops"], 1), 3)
            return result

        if "W1" in workloads:
            results["W1"] = await measured(writer(1), 1)
            results["W1"]["breakdown"] = await w1_breakdown(replicas, sdks[0], data_dir)
        if "W2" in workloads:
            results["W2"] = await measured(writer(clients), clients)
            results["W2"]["ceiling"] = w2_ceiling(results["W2"]["cpu_us_per_op"])
        if "W3" in workloads:
            results["W3"] = await measured(read, clients)
    finally:
        for h in replicas.values():
            ray.kill(h, no_restart=True)
    if "W4" in workloads:
        from bench.telemetry import GOAL_P99_MS, bench, best_within

        args = argparse.Namespace(uavs=w4["uavs"], rates=w4["rates"], step_seconds=w4["step_seconds"], entry_mb=16,
                                  segment_rows=100_000, ingest_delay=0.02, json=True)  # fmt: skip
        steps = (await bench(args, data_dir + "/telemetry"))["steps"]
        # The best step within W4's latency bound; when none held it, the peak, marked as such.
        within = best_within(steps, GOAL_P99_MS)
        best = within or max(steps, key=lambda s: s["updates_per_s"])
        results["W4"] = {
            "ops": best["applied"], "ops_per_s": best["updates_per_s"], "p50_ms": best["p50_ms"],
            "p99_ms": best["p99_ms"], "errors": 0, "offered_per_s": best["offered_per_s"],
            "within_p99_bound": within is not None,
            "peak_any_latency_per_s": max(s["updates_per_s"] for s in steps), "steps": steps,
        }  # fmt: skip
    return results


def run(workloads: list[str], clients: int, seconds: float, data_dir: str, w4: dict[str, Any]) -> dict[str, Any]:
    import ray

    ray.init(address="local", include_dashboard=False, resources={f"station:{s}": 1 for s in STATIONS},
             logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
    try:
        return asyncio.run(_run(workloads, clients, seconds, data_dir, w4))
    finally:
        ray.shutdown()
