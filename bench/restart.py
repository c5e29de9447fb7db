"""Memory and restart of replicas holding a large fleet: 3 standalone nodes (`python -m
controlplane node`, real processes on 127.0.0.x) loaded with N UAVs and N missions through
the leader stream, then:

  - each node's resident memory (VmRSS) holding that state;
  - a follower SIGKILLed and restarted on its data directory: seconds from launching its
    process until it answers, and until it has applied everything committed before the kill
    (it restores its snapshot, replays its WAL and catches up), and its memory then;
  - the whole group SIGKILLed and restarted (a site's power loss): seconds until a
    linearizable read is answered.

    python -m bench.restart [--count 100000] [--json]
    python -m bench.restart --ray   # Ray replicas: their memory holding the same load

Issue 14's goals: <= 300 MB RSS per replica at 100k UAVs + 100k missions; a restart serves
again within 2 s.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.standalone_nodes import CLUSTER_TOKEN, NodeProcesses, running_group

if TYPE_CHECKING:
    from controlplane.leader_client import LeaderClient

RSS_GOAL_MB = 300.0
RESTART_GOAL_S = 2.0
RAY_STATIONS = ["alpha", "bravo", "charlie"]


def memory_mb(pid: int) -> dict[str, float]:
    """VmRSS (resident now) and VmHWM (the peak) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return {"rss_mb": round(fields["VmRSS"], 1), "peak_mb": round(fields["VmHWM"], 1)}


def commands(count: int, stations: int = 50) -> list[list[bytes]]:
    """Phases, each loaded after the one before: stations, `count` missions of 3 waypoints,
    `count` UAVs (each taking a pending mission as it registers: missions created while
    100,000 UAVs are idle would each be compared with all of them). Without sessions (a bulk
    load; a command retried after an unknown outcome is refused as a conflict, which the
    load accepts)."""
    return [
        [json.dumps({"type": "register_station", "station": f"station-{i}"}).encode() for i in range(stations)],
        [
        json.dumps({"type": "create_mission", "mission": f"mission-{i:06d}", "priority": i % 5,
                    "min_battery": 30.0,
                    "waypoints": [{"lat": 47.0, "lon": 8.0 + k / 100, "alt": 50.0 + k} for k in range(3)]}).encode()
        for i in range(count)
        ],
        [
        json.dumps({"type": "register_uav", "uav": f"uav-{i:06d}", "home_station": f"station-{i % stations}",
                    "lat": 47 + (i % 1000) / 1000, "lon": 8 + (i % 997) / 1000, "battery": 50 + i % 50}).encode()
        for i in range(count)
        ],
    ]  # fmt: skip


async def load(client: LeaderClient, phases: list[list[bytes]], concurrency: int = 256) -> float:
    """Every command through the client's leader stream, `concurrency` in flight; commands/s."""
    total = sum(len(p) for p in phases)
    done = itertools.count(1)
    started = time.monotonic()

    async def worker(todo: Iterator[bytes]) -> None:
        for command in todo:
            answer = await client.propose(command, timeout=60.0)
            if not answer.get("ok", True) and not answer.get("conflict"):
                raise RuntimeError(f"the load was refused: {answer}")
            n = next(done)
            if n % 20_000 == 0:
                print(f"loaded {n:,} of {total:,} commands", file=sys.stderr, flush=True)

    for phase in phases:
        todo = iter(phase)
        await asyncio.gather(*(worker(todo) for _ in range(concurrency)))
    return total / (time.monotonic() - started)


async def load_nodes(nodes: NodeProcesses, phases: list[list[bytes]]) -> float:
    from controlplane.node_client import NodeGroup

    group = NodeGroup([nodes.peer_url(n) for n in nodes.nodes], token=CLUSTER_TOKEN)
    try:
        return await load(group, phases)
    finally:
        await group.close()


async def _ray_holding(count: int, data_dir: str) -> dict[str, Any]:
    import ray

    from controlplane.actors import deploy, find_leader
    from controlplane.client import ControlPlane

    group = f"restart{os.getpid()}"
    replicas = deploy(group, RAY_STATIONS, data_dir)
    try:
        await find_leader(replicas, 60)
        rate = await load(ControlPlane(group, replicas), commands(count))
        pids = {r: await h.__ray_call__.remote(lambda _replica: os.getpid()) for r, h in replicas.items()}
        statuses = {r: await h.status.remote() for r, h in replicas.items()}
        commit = max(s["commit"] for s in statuses.values())
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # every replica applied the whole load
            statuses = {r: await h.status.remote() for r, h in replicas.items()}
            if all(s["applied"] >= commit for s in statuses.values()):
                break
            await asyncio.sleep(0.1)
        return {"load_commands_per_s": round(rate), "holding": {f"replica_{r}": memory_mb(p) for r, p in pids.items()}}
    finally:
        for h in replicas.values():
            ray.kill(h, no_restart=True)


def ray_holding(count: int) -> dict[str, Any]:
    """Ray replicas (detached actors, one per station, as deployed) holding the same load:
    each one's resident memory (a Ray worker process: Ray's own core worker included)."""
    import logging

    import ray

    ray.init(address="local", include_dashboard=False, resources={f"station:{s}": 1 for s in RAY_STATIONS},
             logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
    try:
        with tempfile.TemporaryDirectory(prefix="bench-restart-ray-") as tmp:
            return asyncio.run(_ray_holding(count, tmp))
    finally:
        ray.shutdown()


def caught_up(nodes: NodeProcesses, name: str, index: int) -> bool:
    status = nodes.status(name)
    return status is not None and status["applied"] >= index


def restart_follower(nodes: NodeProcesses) -> dict[str, Any]:
    leader = nodes.wait_for("a leader", nodes.leader)
    follower = next(n for n in nodes.founders if n != leader)
    leader_status = nodes.status(leader)
    assert leader_status is not None
    committed = leader_status["commit"]
    nodes.kill(follower)
    started = time.monotonic()
    proc = nodes.start(follower, LOG_LEVEL="INFO")
    nodes.wait_for(f"{follower} to answer", lambda: nodes.status(follower), timeout=120)
    answers_s = time.monotonic() - started
    nodes.wait_for(f"{follower} to catch up", lambda: caught_up(nodes, follower, committed), timeout=120)
    recovery = [line.split(": ", 1)[-1] for line in nodes.log(follower).splitlines() if "recovered:" in line]
    return {
        "recovery": recovery[-1:],
        "answers_s": round(answers_s, 2),
        "caught_up_s": round(time.monotonic() - started, 2),
        **memory_mb(proc.pid),
    }


def restart_group(nodes: NodeProcesses, uav: str) -> dict[str, Any]:
    for name in list(nodes.procs):
        nodes.kill(name)
    started = time.monotonic()
    for name in nodes.founders:
        nodes.start(name)

    async def read() -> Any:
        from controlplane.node_client import NodeGroup

        group = NodeGroup([nodes.peer_url(n) for n in nodes.nodes], token=CLUSTER_TOKEN)
        try:
            return await group.read("uav", {"id": uav}, timeout=120.0)
        finally:
            await group.close()

    record = asyncio.run(read())
    if record.get("id") != uav:
        raise AssertionError(f"the read after the restart answered {record!r}")
    return {"read_s": round(time.monotonic() - started, 2)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000, help="UAVs, and as many missions")
    p.add_argument("--json", action="store_true")
    p.add_argument("--ray", action="store_true", help="Ray replicas instead: their memory holding the load")
    args = p.parse_args()
    if args.count < 1:
        p.error("--count must be positive")
    if args.ray:
        held = ray_holding(args.count)
        worst = max(m["rss_mb"] for m in held["holding"].values())
        goal = {"worst": worst, "goal": RSS_GOAL_MB, "met": worst <= RSS_GOAL_MB}
        ray_result = {"uavs": args.count, "missions": args.count, **held, "goals": {"rss_mb": goal}}
        print(json.dumps(ray_result) if args.json else json.dumps(ray_result, indent=2))
        return
    with tempfile.TemporaryDirectory(prefix="bench-restart-") as tmp, running_group(Path(tmp)) as nodes:
        rate = asyncio.run(load_nodes(nodes, commands(args.count)))
        leader = nodes.wait_for("a leader", nodes.leader)
        status = nodes.status(leader)
        assert status is not None
        nodes.wait_for("every node applied", lambda: all(caught_up(nodes, n, status["commit"]) for n in nodes.founders))
        held = {name: memory_mb(proc.pid) for name, proc in nodes.procs.items()}
        follower = restart_follower(nodes)
        group = restart_group(nodes, "uav-000000")
    worst_rss = max(m["rss_mb"] for m in [*held.values(), follower])
    result = {
        "uavs": args.count,
        "missions": args.count,
        "load_commands_per_s": round(rate),
        "holding": held,
        "follower_restart": follower,
        "group_restart": group,
        "goals": {
            "rss_mb": {"worst": worst_rss, "goal": RSS_GOAL_MB, "met": worst_rss <= RSS_GOAL_MB},
            "restart_s": {
                "follower_caught_up": follower["caught_up_s"],
                "group_read": group["read_s"],
                "goal": RESTART_GOAL_S,
                "met": max(follower["caught_up_s"], group["read_s"]) <= RESTART_GOAL_S,
            },
        },
    }
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
