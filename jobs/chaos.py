"""A bounded fault campaign with load running, and its report.

    python -m jobs.chaos --group fleet [--faults leader,follower] [--rounds 4] [--interval 3]

A client registers UAVs one after another the whole time (the load); every `interval`
seconds one fault hits: `leader` kills the leader actor, `follower` a follower (Ray restarts
both; they recover from their disks). At the end: every acknowledged registration must be
readable (linearizable), every replica's tables must hash the same at one checkpoint, and
the availability gaps (longest time without an acknowledged write) are reported. Exit 1 if
anything acknowledged is missing or the replicas differ.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import random
import sys
import time
from typing import Any

from jobs.common import EXIT_USAGE, attach, finish, run

FAULTS = ("leader", "follower")
STATION = "chaos"


async def campaign(args: argparse.Namespace) -> int:
    import ray

    from controlplane.actors import find_leader, group_replicas
    from controlplane.client import ControlPlane, ControlPlaneError
    from controlplane.sync.synchronizer import DataSynchronizer

    replicas = group_replicas(args.group)
    if not replicas:
        print(f"no replicas of group {args.group!r}: deploy it first", file=sys.stderr)
        return EXIT_USAGE
    client = ControlPlane(args.group, replicas)
    await client.command({"type": "register_station", "station": STATION})
    acked: list[tuple[float, str]] = []
    errors: list[str] = []
    stop = asyncio.Event()
    prefix = f"chaos-{int(time.time())}-"

    async def load() -> None:
        n = 0
        while not stop.is_set():
            uav = f"{prefix}{n}"
            try:
                answer = await client.command({"type": "register_uav", "uav": uav, "home_station": STATION}, 20)
            except ControlPlaneError as exc:
                errors.append(str(exc))
                continue
            if answer["ok"]:
                acked.append((time.monotonic(), uav))
            n += 1

    rng = random.Random(args.seed)
    events: list[dict[str, Any]] = []
    started = time.monotonic()
    writer = asyncio.create_task(load())
    for round_ in range(args.rounds):
        await asyncio.sleep(args.interval)
        fault = args.faults[round_ % len(args.faults)]
        leader = await find_leader(replicas, 30)
        target = leader if fault == "leader" else rng.choice([r for r in replicas if r != leader])
        ray.kill(replicas[target], no_restart=False)
        events.append({"at_s": round(time.monotonic() - started, 2), "fault": fault, "replica": target})
        print(f"round {round_ + 1}/{args.rounds}: killed {fault} (replica {target})", file=sys.stderr, flush=True)
    await asyncio.sleep(args.interval)
    stop.set()
    await writer
    ended = time.monotonic()
    times = [started] + [t for t, _ in acked] + [ended]
    gaps = sorted((b - a for a, b in itertools.pairwise(times)), reverse=True)
    present = {u["id"] for u in await client.query("uavs", {"station": STATION})}
    missing = [u for _, u in acked if u not in present]
    report = await DataSynchronizer(client).compare_digests(timeout=60)
    return finish(
        {
            "group": args.group,
            "duration_s": round(ended - started, 1),
            "faults": events,
            "acknowledged": len(acked),
            "missing": missing[:20],
            "client_errors": len(errors),
            "longest_gaps_s": [round(g, 3) for g in gaps[:5]],
            "digests_equal": report.ok,
            "digest_index": report.index,
            "replicas_not_answering": report.missing,
        },
        ok=not missing and report.ok,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.chaos", description=__doc__.splitlines()[0])
    p.add_argument("--group", required=True)
    p.add_argument("--faults", default="leader,follower", help=f"comma-separated, from {FAULTS}")
    p.add_argument("--rounds", type=int, default=4, help="faults in all (the campaign is bounded)")
    p.add_argument("--interval", type=float, default=3.0, help="seconds between faults")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--address", default="auto")
    args = p.parse_args(argv)
    args.faults = args.faults.split(",")
    unknown = sorted(set(args.faults) - set(FAULTS))
    if unknown:
        p.error(f"unknown faults {unknown}; choose from {FAULTS}")
    if not 1 <= args.rounds <= 100 or not 0.5 <= args.interval <= 300:
        p.error("--rounds must be 1..100 and --interval 0.5..300 seconds")
    attach(args.address)
    return run(campaign(args))


if __name__ == "__main__":
    sys.exit(main())
