"""Failover under load: kill the leader, time until the next write commits. Ours (3 replicas
on Ray: the leader actor is killed and Ray restarts it; or the leader's station node is
SIGKILLed and a new node for that station joins after the failover; or 3 standalone
`controlplane node` processes on 127.0.0.1-3, the leader SIGKILLed and restarted on its data)
against etcd 3.4 (3 members on 127.0.0.1: the leader process is SIGKILLed, then restarted on
its data), at etcd's default timing and again with its heartbeat and election timeout matched
to ours (etcd-matched). Ours with default timeouts.

    python -m bench.failover [--kills 20] [--quick] [--json]
                             [--systems ours,ours-node,standalone,etcd,etcd-matched]

A client writes one key after another the whole time; a failover's length is from the kill
to the first write acknowledged after it. Between kills the killed member comes back and
catches up. Prints p50 / p99 / max per system; --json ends with one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from typing import Any

from bench.etcd_cluster import EtcdCluster
from bench.station_nodes import StationNodes

STATIONS = ["alpha", "bravo", "charlie"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def summary(name: str, times: list[float]) -> dict[str, Any]:
    return {
        "system": name,
        "kills": len(times),
        "p50_s": round(percentile(times, 50), 3),
        "p99_s": round(percentile(times, 99), 3),
        "max_s": round(max(times), 3),
        "mean_s": round(statistics.fmean(times), 3),
    }


class Writer:
    """Writes continuously; remembers when each acknowledged write was issued and answered."""

    def __init__(self, write: Any) -> None:
        self.write = write
        self.acked: list[tuple[float, float]] = []  # (issued, acknowledged)
        self.stop = asyncio.Event()

    async def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            n += 1
            issued = time.monotonic()
            try:
                if await self.write(n):
                    self.acked.append((issued, time.monotonic()))
            except Exception:  # a failed write during failover: keep going
                await asyncio.sleep(0.005)

    async def next_ack_after(self, moment: float, timeout: float = 30.0) -> float:
        """From `moment` to the answer of the first write issued after it (a write already in
        flight at the kill may have committed before it, so it proves nothing)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [acked for issued, acked in self.acked[-200:] if issued >= moment]
            if later:
                return later[0] - moment
            await asyncio.sleep(0.002)
        raise TimeoutError(f"no write acknowledged within {timeout}s of the kill")


async def _gone(pid: int, timeout: float = 30.0) -> float:
    """The moment process `pid` is found gone (or a zombie), polled every millisecond."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return time.monotonic()
        except (FileNotFoundError, ProcessLookupError):
            return time.monotonic()
        await asyncio.sleep(0.001)
    raise TimeoutError(f"process {pid} still runs {timeout}s after it was killed")


async def ours(kills: int, data_dir: str, progress: bool, stations: StationNodes | None = None) -> list[float]:
    """Kill the leader actor (Ray restarts it in place), or with `stations` SIGKILL the
    leader's station node, and once the failover is timed bring a fresh node up for that
    station (the replica restarts there, on its data)."""
    import ray

    from controlplane.actors import deploy, find_leader
    from controlplane.client import ControlPlane, ControlPlaneError

    handles = deploy("failover", STATIONS, data_dir)
    cp = ControlPlane("failover", handles)
    await find_leader(handles, 60)
    await cp.command({"type": "register_station", "station": "alpha"})

    async def write(n: int) -> bool:
        try:
            answer = await cp.command({"type": "register_uav", "uav": f"f{n}", "home_station": "alpha"}, timeout=10)
        except ControlPlaneError:
            return False
        return bool(answer["ok"])

    writer = Writer(write)
    task = asyncio.create_task(writer.run())
    times = []
    label = "ours-node" if stations is not None else "ours"
    try:
        for k in range(kills):
            await asyncio.sleep(1.0)
            leader = await find_leader(handles, 30)
            station = STATIONS[leader - 1]  # deploy places replica i on the i-th station
            pid = await handles[leader].__ray_call__.remote(lambda _replica: os.getpid())
            if stations is None:
                ray.kill(handles[leader], no_restart=False)
            else:
                stations.kill(station, [pid])
            # Timed from the leader's death: ray.kill returns before the process is gone, and
            # clients on the leader stream are answered by it until then.
            killed_at = await _gone(pid)
            times.append(await writer.next_ack_after(killed_at))
            if progress:
                print(f"  {label}  kill {k + 1}/{kills}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
            if stations is not None:
                stations.revive(station)
            await _caught_up(handles, 120)
    finally:
        writer.stop.set()
        await task
        for h in handles.values():
            ray.kill(h, no_restart=True)
    return times


async def standalone(kills: int, root: str, progress: bool) -> list[float]:
    """Three `python -m controlplane node` processes; the SDK writes through NodeGroup."""
    from pathlib import Path

    from bench.standalone_nodes import CLUSTER_TOKEN, NodeProcesses
    from controlplane.leader_client import ControlPlaneError
    from controlplane.node_client import NodeGroup

    nodes = NodeProcesses(Path(root), 3)
    group = NodeGroup([nodes.peer_url(n) for n in nodes.founders], token=CLUSTER_TOKEN)
    for name in nodes.founders:
        nodes.start(name)
    times: list[float] = []
    try:
        await asyncio.to_thread(nodes.wait_for_group, 60.0)
        await group.command({"type": "register_station", "station": "alpha"})

        async def write(n: int) -> bool:
            try:
                answer = await group.command({"type": "register_uav", "uav": f"f{n}", "home_station": "alpha"}, 10)
            except (ControlPlaneError, TimeoutError):
                return False
            return bool(answer["ok"])

        writer = Writer(write)
        task = asyncio.create_task(writer.run())
        try:
            for k in range(kills):
                await asyncio.sleep(1.0)
                leader = await asyncio.to_thread(nodes.wait_for, "a leader", nodes.leader, 30.0)
                killed_at = time.monotonic()
                nodes.kill(leader)
                times.append(await writer.next_ack_after(killed_at))
                if progress:
                    print(f"  standalone  kill {k + 1}/{kills}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
                nodes.start(leader)
                await asyncio.to_thread(nodes.wait_for, "the node back and caught up", lambda: _close(nodes), 60.0)
        finally:
            writer.stop.set()
            await task
    finally:
        await group.close()
        nodes.stop_all()
    return times


def _close(nodes: Any) -> bool:
    statuses = [nodes.status(n) for n in nodes.founders]
    if any(s is None for s in statuses):
        return False
    applied = [s["applied"] for s in statuses]
    return max(applied) - min(applied) < 50


async def _caught_up(handles: dict[int, Any], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            statuses = await asyncio.gather(*(asyncio.wait_for(h.status.remote(), 2) for h in handles.values()))
        except Exception:
            await asyncio.sleep(0.1)
            continue
        commits = [s["commit"] for s in statuses]
        if max(commits) - min(commits) < 50 and all(s["role"] != "candidate" for s in statuses):
            return
        await asyncio.sleep(0.1)


# Ours: a 50 ms tick, elections after 10-20 ticks; etcd takes (heartbeat, election timeout)
# and randomizes elections in [timeout, 2 x timeout): (50, 500) is the same timing.
MATCHED_TIMING = (50, 500)


async def etcd(kills: int, root: str, progress: bool, timing: tuple[int, int] | None = None) -> list[float]:
    import aiohttp

    cluster = EtcdCluster(root, timing)
    cluster.start_all()
    # Short per-request timeouts, like a client holding every endpoint and moving on.
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=0.5))
    alive = set(cluster.members)

    async def leader_name() -> str:
        for _ in range(300):
            for name in sorted(alive):
                try:
                    async with session.post(cluster.url(name) + "/v3/maintenance/status", json={}) as r:
                        status = await r.json()
                    if status.get("leader") == status["header"]["member_id"]:
                        return name
                except (aiohttp.ClientError, TimeoutError, KeyError, ValueError):
                    continue
            await asyncio.sleep(0.05)
        raise TimeoutError("etcd elected no leader")

    order = sorted(cluster.members)

    async def write(n: int) -> bool:
        key = base64.b64encode(f"f{n}".encode()).decode()
        for name in order:  # like a client with every endpoint: try the next on failure
            if name not in alive:
                continue
            try:
                async with session.post(cluster.url(name) + "/v3/kv/put", json={"key": key, "value": key}) as r:
                    if r.status == 200 and "header" in await r.json():
                        return True
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
        return False

    try:
        await leader_name()
        writer = Writer(write)
        task = asyncio.create_task(writer.run())
        times = []
        for k in range(kills):
            await asyncio.sleep(1.0)
            victim = await leader_name()
            killed_at = time.monotonic()
            cluster.procs[victim].send_signal(signal.SIGKILL)
            alive.discard(victim)
            times.append(await writer.next_ack_after(killed_at))
            if progress:
                print(f"  etcd  kill {k + 1}/{kills}: {times[-1]:.3f} s", file=sys.stderr, flush=True)
            cluster.procs[victim].wait()
            cluster.start(victim, state="existing")  # back on its data, as Ray restarts our actor
            alive.add(victim)
            await asyncio.sleep(0.5)
        writer.stop.set()
        await task
        return times
    finally:
        await session.close()
        cluster.stop_all()


SYSTEMS = ("ours", "ours-node", "standalone", "etcd", "etcd-matched")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--quick", action="store_true", help="5 kills each")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    kills = 5 if args.quick else args.kills
    systems = args.systems.split(",")
    if kills < 1 or not set(systems) <= set(SYSTEMS):
        p.error(f"--kills must be positive and --systems a subset of {','.join(SYSTEMS)}")
    if {"etcd", "etcd-matched"} & set(systems) and shutil.which("etcd") is None:
        p.error("etcd is not installed (Debian: apt-get install etcd-server; scripts/etcd.sh does it)")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    results = []
    with tempfile.TemporaryDirectory(prefix="uav-failover-") as root:
        if "ours" in systems:
            import ray

            ray.init(address="local", include_dashboard=False, resources={f"station:{s}": 1 for s in STATIONS},
                     logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
            try:
                results.append(summary("ours (leader actor killed)", asyncio.run(ours(kills, root + "/ours", True))))
            finally:
                ray.shutdown()
        if "ours-node" in systems:
            import ray

            # Ray reports every killed raylet on stdout: keep stdout for the results.
            with contextlib.redirect_stdout(sys.stderr):
                nodes = StationNodes(STATIONS)
                ray.init(address=nodes.cluster.address, logging_level=logging.ERROR, log_to_driver=False)
                try:
                    times = asyncio.run(ours(kills, root + "/ours-node", True, nodes))
                    results.append(summary("ours (leader's node killed)", times))
                finally:
                    ray.shutdown()
                    nodes.shutdown()
        if "standalone" in systems:
            os.makedirs(root + "/standalone")
            times = asyncio.run(standalone(kills, root + "/standalone", True))
            results.append(summary("ours, standalone nodes (leader SIGKILLed)", times))
        if "etcd" in systems:
            results.append(summary("etcd 3.4 (leader SIGKILLed)", asyncio.run(etcd(kills, root + "/etcd", True))))
        if "etcd-matched" in systems:
            heartbeat, election = MATCHED_TIMING
            times = asyncio.run(etcd(kills, root + "/etcd-matched", True, MATCHED_TIMING))
            results.append(summary(f"etcd 3.4, heartbeat {heartbeat} ms / election {election} ms (as ours)", times))
    for r in results:
        print(f"{r['system']:<30} kills {r['kills']:>3}  p50 {r['p50_s']:.3f} s  p99 {r['p99_s']:.3f} s  "
              f"max {r['max_s']:.3f} s")  # fmt: skip
    if args.json:
        print(json.dumps({"bench": "failover", "results": results, "goal": {"p50_s": 1.0, "p99_s": 2.0}}))


if __name__ == "__main__":
    main()
