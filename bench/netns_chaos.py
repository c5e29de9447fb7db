"""A fault campaign on station hosts: real partitions and lost hosts, with Ray across them.

    python -m bench.netns_chaos [--replicas 5] [--grace 8] [--quick] [--out report.json]

Makes one network namespace for Ray's head (no station) and one per station (replicas + a
spare), deploys the group with `python -m jobs.deploy` (which starts the controller), and
runs SDK clients writing and reading UAVs as registers while faults hit one after another:

- leader isolated: the leader's station loses every other station (both directions);
- 2|3 split (5 replicas): the leader and one follower lose the other three;
- one-way cut: a follower can no longer send to the leader;
- station returning on its disk: a follower's host is lost (everything killed) and comes back
  within the grace period: its replica recovers from its disk;
- station returning without its disk: the same, with its data directory gone: the controller
  replaces the member on that station;
- station lost: a follower's host is lost for good: the controller replaces its member on the
  spare station within the grace period + 10 s.

Partitions are between stations only (Ray's head always reaches them, as its own control
network would). Checked, and in the JSON report: the clients' history is linearizable, no
acknowledged write is lost, writes sent to the minority side while partitioned are never
acknowledged, every replica's tables hash the same afterwards, the controller replaced what it
had to; the availability gap (longest time without an acknowledged operation) per fault.
--quick: 3 replicas; leader isolated, one-way cut, station lost (the default test command).
Root only (network namespaces). Exit 1 when a check fails.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.netns import StationHosts, available
from bench.netns_ray import RayOnHosts

GROUP = "netchaos"
HEAD = 1  # the head's namespace; station s<k> lives in namespace k + 1


def station_ns(station: str) -> int:
    return int(station[1:]) + 1


# --- the driver: runs inside the head's namespace, a Ray driver there -------------------------


class Campaign:
    def __init__(self, hosts: StationHosts, ray_hosts: RayOnHosts, data_root: str, grace: float) -> None:
        self.hosts = hosts
        self.ray_hosts = ray_hosts
        self.data_root = data_root
        self.grace = grace
        self.faults: list[dict[str, Any]] = []
        self.minority = {"attempts": 0, "acknowledged": 0}
        self.started = time.monotonic()

    def replicas(self) -> dict[int, Any]:
        from controlplane.ray_group import group_replicas

        return group_replicas(GROUP)

    async def placement(self) -> dict[int, str]:
        from controlplane.controller_actor import find_controller

        controller = find_controller(GROUP)
        report = await controller.status.remote()
        return {int(r): s for r, s in report["placement"].items()}

    async def leader(self) -> int:
        from controlplane.ray_group import find_leader

        placement = await self.placement()
        handles = {r: h for r, h in self.replicas().items() if r in placement}
        return await find_leader(handles, 60)

    async def settled(self, timeout: float = 90) -> None:
        """A leader, and every member of the map applied up to its commit index."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                placement = await self.placement()
                leader = await self.leader()
                handles = self.replicas()
                commit = (await handles[leader].status.remote())["commit"]
                applied = [(await asyncio.wait_for(handles[r].status.remote(), 3))["applied"] for r in placement]
                if min(applied) >= commit:
                    return
            except Exception as exc:  # restarting replicas, an election: ask again
                error = exc
            else:
                error = None
            if time.monotonic() > deadline:
                raise TimeoutError(f"the group did not settle within {timeout}s ({error})")
            await asyncio.sleep(0.3)

    async def minority_write(self, replica: int) -> None:
        """Propose straight to a replica on the minority side: it must never acknowledge."""
        from controlplane.state.commands import encode

        handle = self.replicas()[replica]
        command = encode({"type": "register_uav", "uav": f"minority-{replica}-{time.time_ns()}", "home_station": "s1"})
        self.minority["attempts"] += 1
        try:
            answer = await asyncio.wait_for(handle.propose.remote(command, 2.0), 4)
        except Exception:
            return  # not the leader, or no quorum: refused or timed out, never acknowledged
        if isinstance(answer, dict) and answer.get("ok"):
            self.minority["acknowledged"] += 1

    async def fault(self, name: str, act: Callable[[], Awaitable[dict[str, Any]]], history: Any) -> None:
        t0 = time.monotonic()
        print(f"[{t0 - self.started:6.1f}s] {name}", file=sys.stderr, flush=True)
        details = await act()
        await self.settled()
        t1 = time.monotonic()
        gap, gap_at = history.longest_gap(t0, t1)
        self.faults.append(
            {"fault": name, "at_s": round(t0 - self.started, 1), "settled_after_s": round(t1 - t0, 1),
             "gap_s": round(gap, 2), "gap_began_after_s": round(gap_at, 2), **details}
        )  # fmt: skip

    # --- faults -------------------------------------------------------------------------------

    async def split(self, minority: list[int], hold: float) -> dict[str, Any]:
        """Stations of `minority` (replica ids) lose every other station for `hold` seconds."""
        placement = await self.placement()
        small = {station_ns(placement[r]) for r in minority}
        large = {station_ns(s) for s in set(self.ray_hosts.stations.values())} - small
        for a in small:
            for b in large:
                self.hosts.cut(a, b)
        try:
            await asyncio.sleep(min(hold, 1.0))
            await asyncio.gather(*(self.minority_write(r) for r in minority))
            await asyncio.sleep(max(0.0, hold - 1.0))
        finally:
            self.hosts.heal()
        return {"minority": [placement[r] for r in minority]}

    async def leader_isolated(self) -> dict[str, Any]:
        return await self.split([await self.leader()], 5.0)

    async def two_three_split(self) -> dict[str, Any]:
        leader = await self.leader()
        follower = next(r for r in sorted(await self.placement()) if r != leader)
        return await self.split([leader, follower], 5.0)

    async def one_way_cut(self) -> dict[str, Any]:
        placement = await self.placement()
        leader = await self.leader()
        follower = next(r for r in sorted(placement) if r != leader)
        self.hosts.cut_one_way(station_ns(placement[follower]), station_ns(placement[leader]))
        await asyncio.sleep(5.0)
        self.hosts.heal()
        return {"cut": f"{placement[follower]} -> {placement[leader]}"}

    async def lose_host(self, station: str) -> None:
        """Everything in the station's namespace dies; returns once Ray has noticed."""
        import ray

        self.hosts.kill_all(station_ns(station))
        deadline = time.monotonic() + 60
        while any(
            n.get("Alive") and f"station:{station}" in n.get("Resources", {})
            for n in ray.nodes()  # type: ignore[no-untyped-call]
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"Ray never noticed station {station} was lost")
            await asyncio.sleep(0.2)

    async def a_follower_station(self) -> tuple[int, str]:
        placement = await self.placement()
        leader = await self.leader()
        replica = next(r for r in sorted(placement, reverse=True) if r != leader)
        return replica, placement[replica]

    async def returns_on_disk(self) -> dict[str, Any]:
        replica, station = await self.a_follower_station()
        lost_at = time.monotonic()
        await self.lose_host(station)
        await asyncio.to_thread(self.ray_hosts.start_node, station_ns(station))
        return {"station": station, "replica": replica, "back_after_s": round(time.monotonic() - lost_at, 1)}

    async def returns_without_disk(self) -> dict[str, Any]:
        replica, station = await self.a_follower_station()
        await self.lose_host(station)
        shutil.rmtree(Path(self.data_root) / GROUP / str(replica))
        await asyncio.to_thread(self.ray_hosts.start_node, station_ns(station))
        move = await self.replaced(replica, 90)
        return {"station": station, "replica": replica, "replacement": move}

    async def station_lost(self) -> dict[str, Any]:
        replica, station = await self.a_follower_station()
        lost_at = time.time()
        await self.lose_host(station)
        move = await self.replaced(replica, self.grace + 60)
        return {"station": station, "replica": replica, "replacement": move,
                "replaced_after_s": round(move["at"] - lost_at, 1)}  # fmt: skip

    async def replaced(self, replica: int, timeout: float) -> dict[str, Any]:
        from controlplane.controller_actor import find_controller

        controller = find_controller(GROUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            report = await controller.status.remote()
            done = [m for m in report.get("replaced", []) if m["old"] == replica]
            if done:
                return dict(done[-1])
            await asyncio.sleep(0.3)
        raise TimeoutError(f"the controller did not replace replica {replica} within {timeout}s")


def lost_acknowledged_writes(ops: list[Any], final: dict[str, int]) -> list[str]:
    """Keys whose final value is older than an acknowledged write: the value of a write that
    had returned before the last acknowledged one was even sent (or no write's at all)."""
    lost = []
    for key, value in final.items():
        writes = [op for op in ops if op.key == key and op.kind == "write"]
        acked = [op for op in writes if op.completed]
        if not acked:
            continue
        last = max(acked, key=lambda op: op.ret)
        source = next((op for op in writes if op.value == value), None)
        never_written = source is None and value != 0
        if never_written or (source is not None and source.ret < last.call):
            lost.append(key)
    return lost


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from bench.chaos_clients import KEYS, History, register_keys, sdk_client, value_of
    from controlplane.client import ControlPlane
    from controlplane.ray_group import NAMESPACE
    from controlplane.sim.linearizability import check_history
    from controlplane.sync.synchronizer import DataSynchronizer

    ray.init(address=args.address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)
    hosts = StationHosts(args.count, args.tag)  # made by the orchestrator: not made again
    stations = {station_ns(f"s{k}"): f"s{k}" for k in range(1, args.count)}
    ray_hosts = RayOnHosts(hosts, stations, head=HEAD)  # the token: this process's RAY_AUTH_TOKEN
    campaign = Campaign(hosts, ray_hosts, args.data_root, args.grace)
    await campaign.settled()
    setup = ControlPlane(GROUP, campaign.replicas())
    await register_keys(setup, "s1")
    history = History()
    stop = asyncio.Event()
    clients = [
        asyncio.create_task(sdk_client(n, lambda: ControlPlane(GROUP, campaign.replicas()), history, stop))
        for n in range(1, 4)
    ]
    await asyncio.sleep(2.0)
    plan: list[tuple[str, Callable[[], Awaitable[dict[str, Any]]]]] = [("leader isolated", campaign.leader_isolated)]
    if args.replicas >= 5:
        plan.append(("2|3 split, leader on the 2 side", campaign.two_three_split))
    plan.append(("one-way cut, follower to leader", campaign.one_way_cut))
    if not args.quick:
        plan += [
            ("station returning on its disk", campaign.returns_on_disk),
            ("station returning without its disk", campaign.returns_without_disk),
        ]
    plan.append(("station lost", campaign.station_lost))
    try:
        for name, act in plan:
            await campaign.fault(name, act, history)
            await asyncio.sleep(1.0)
    finally:
        stop.set()
        ended_clients = await asyncio.gather(*clients, return_exceptions=True)
    client_failures = [f"{type(e).__name__}: {e}" for e in ended_clients if isinstance(e, BaseException)]
    ended = time.monotonic()
    client = ControlPlane(GROUP, campaign.replicas())
    final = {key: value_of((await client.query("uav", {"id": key}))["alt"]) for key in KEYS}
    linear = check_history(history.ops, initial=0)
    lost = lost_acknowledged_writes(history.ops, final)
    digests = await DataSynchronizer(client).compare_digests(timeout=60)
    replaced = [f for f in campaign.faults if "replacement" in f]
    in_time = all(f.get("replaced_after_s", 0) <= args.grace + 10 for f in replaced)
    acknowledged = history.acknowledged()
    report = {
        "replicas": args.replicas,
        "grace_s": args.grace,
        "duration_s": round(ended - campaign.started, 1),
        "faults": campaign.faults,
        "operations": len(history.ops),
        "acknowledged": len(acknowledged),
        "acknowledged_writes": sum(op.kind == "write" for op in acknowledged),
        "unknown": len(history.ops) - len(acknowledged),
        "client_failures": client_failures,
        "linearizable": linear.ok,
        "failing_key": linear.failing_key,
        "lost_acknowledged_writes": len(lost),
        "minority_writes": campaign.minority,
        "digests_equal": digests.ok and not digests.missing,
        "digest_index": digests.index,
        "replaced_in_time": in_time,
    }
    report["ok"] = bool(
        linear.ok and not lost and not client_failures and campaign.minority["acknowledged"] == 0
        and report["digests_equal"] and in_time and report["acknowledged_writes"] > 0
    )  # fmt: skip
    return report


# --- the orchestrator: makes the hosts, starts Ray and deploys, runs the driver -------------


def run_campaign(replicas: int, grace: float, quick: bool) -> dict[str, Any]:
    why = available()
    if why is not None:
        raise RuntimeError(f"station namespaces cannot be made here: {why}")
    count = 1 + replicas + 1  # the head, the stations, a spare
    data_root = tempfile.mkdtemp(prefix="netchaos-")
    try:
        with StationHosts(count) as hosts:
            ray_hosts = RayOnHosts(hosts, {station_ns(f"s{k}"): f"s{k}" for k in range(1, count)}, head=HEAD)
            try:
                ray_hosts.start()
                deployed = ray_hosts.run(
                    HEAD,
                    [sys.executable, "-m", "jobs.deploy", "--group", GROUP, "--replicas", str(replicas),
                     "--address", ray_hosts.address, "--data-root", data_root, "--grace", str(grace)],
                )  # fmt: skip
                if deployed.returncode != 0:
                    raise RuntimeError(f"jobs.deploy failed: {deployed.stderr[-3000:]}")
                argv = [sys.executable, "-m", "bench.netns_chaos", "--drive", "--address", ray_hosts.address,
                        "--tag", hosts.tag, "--count", str(count), "--data-root", data_root,
                        "--replicas", str(replicas), "--grace", str(grace)]  # fmt: skip
                argv += ["--quick"] if quick else []
                driven = ray_hosts.run(HEAD, argv, timeout=900, stderr=None)  # progress goes to our stderr
                lines = [line for line in driven.stdout.splitlines() if line.startswith("{")]
                if not lines:
                    raise RuntimeError(
                        f"the campaign's driver failed (exit {driven.returncode}): {driven.stdout[-3000:]}"
                    )
                report: dict[str, Any] = json.loads(lines[-1])
                report["placement_at_deploy"] = json.loads(deployed.stdout.strip().splitlines()[-1])["placement"]
                return report
            finally:
                ray_hosts.stop()
    finally:
        shutil.rmtree(data_root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.netns_chaos", description=__doc__.splitlines()[0])
    p.add_argument("--replicas", type=int, default=5, choices=(3, 5))
    p.add_argument("--grace", type=float, default=10.0, help="the controller's grace period, seconds")
    p.add_argument("--quick", action="store_true", help="3 faults (leader isolated, one-way cut, station lost)")
    p.add_argument("--out", help="also write the JSON report here")
    # The driver's own arguments (the orchestrator runs it inside the head's namespace):
    p.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--address", help=argparse.SUPPRESS)
    p.add_argument("--tag", help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p.add_argument("--data-root", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.quick and "--replicas" not in (argv if argv is not None else sys.argv[1:]):
        args.replicas = 3
    if not 1.0 <= args.grace <= 120:
        p.error("--grace must be 1..120 seconds")
    if args.drive:
        report = asyncio.run(drive(args))
    else:
        try:
            report = run_campaign(args.replicas, args.grace, args.quick)
        except (RuntimeError, TimeoutError) as exc:
            print(f"bench.netns_chaos: {exc}", file=sys.stderr)
            return 2
        if args.out:
            Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report), flush=True)
    return 0 if report.get("ok") else 1


if __name__ == "__main__":
    sys.exit(main())
