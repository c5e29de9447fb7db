"""Create the Raft group on the stations (idempotent: replicas that run are kept).

    python -m jobs.deploy --group fleet [--stations a,b,c | --replicas 3] [--data-root DIR]
                          [--auto-register-uavs] [--ingest] [--rpc-timeout S] [--rpc-max-retries N]

Stations default to the Ray nodes that carry a `station:<name>` resource (cluster.yaml
starts every station that way). Waits for a leader and prints the group's status. A group
that already runs is left as it is (its replicas recover from their own disks when Ray
restarts them; moving members is the controller's job).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from jobs.common import EXIT_USAGE, attach, finish, run


async def deploy_group(args: argparse.Namespace) -> int:
    from controlplane.actors import deploy, find_leader, group_replicas, start_ingest
    from controlplane.client import ControlPlane
    from controlplane.controller import RayNodeStations

    existing = group_replicas(args.group)
    stations = args.stations.split(",") if args.stations else None
    if stations is None:
        healthy = [s.name for s in await RayNodeStations().healthy_stations()]
        if len(healthy) < args.replicas:
            print(f"need {args.replicas} stations, the cluster has {healthy}", file=sys.stderr)
            return EXIT_USAGE
        stations = healthy[: args.replicas]
    if existing:
        handles = existing
        action = "kept"
    else:
        handles = deploy(
            args.group,
            stations,
            args.data_root,
            auto_register_uavs=args.auto_register_uavs,
            rpc_timeout=args.rpc_timeout,
            rpc_max_retries=args.rpc_max_retries,
        )
        action = "created"
    leader = await find_leader(handles, args.timeout)
    client = ControlPlane(args.group, handles)
    known = set(await client.query("stations"))
    for station in stations:  # the group's stations are fleet stations (UAVs can be homed there)
        if station not in known:
            await client.command({"type": "register_station", "station": station})
    status: list[dict[str, Any]] = [await h.status.remote() for h in handles.values()]
    ingests = stations if args.ingest else []
    for s in ingests:
        start_ingest(args.group, s)
    return finish(
        {
            "group": args.group,
            "action": action,
            "leader": leader,
            "replicas": {r["replica"]: {"role": r["role"], "term": r["term"], "applied": r["applied"]} for r in status},
            "stations": stations,
            "ingest_actors": ingests,
        }
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.deploy", description=__doc__.splitlines()[0])
    p.add_argument("--group", required=True)
    p.add_argument("--stations", help="comma-separated station names (default: the cluster's station nodes)")
    p.add_argument("--replicas", type=int, default=3)
    p.add_argument("--data-root", default="/var/tmp/uav-control-plane", help="each station's Raft data directory")
    p.add_argument("--auto-register-uavs", action="store_true", help="telemetry from unknown UAVs registers them")
    p.add_argument("--ingest", action="store_true", help="also start each station's telemetry ingest actor")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for a leader")
    p.add_argument("--rpc-timeout", type=float, default=0.5, help="seconds per peer RPC attempt (Raft resends)")
    p.add_argument("--rpc-max-retries", type=int, default=2, help="retries of a failed peer RPC batch")
    p.add_argument("--address", default="auto")
    args = p.parse_args(argv)
    if args.replicas < 1 or args.replicas % 2 == 0:
        p.error("--replicas must be odd and positive (3 or 5 tolerate 1 or 2 station losses)")
    from controlplane.rpc.config import RPCConfig

    try:
        RPCConfig(timeout=args.rpc_timeout, max_retries=args.rpc_max_retries)
    except ValueError as exc:
        p.error(
            str(exc).replace("RPCConfig.timeout", "--rpc-timeout").replace("RPCConfig.max_retries", "--rpc-max-retries")
        )
    attach(args.address)
    return run(deploy_group(args))


if __name__ == "__main__":
    sys.exit(main())
