"""Create the Raft group on the stations (idempotent: replicas that run are kept).

    python -m jobs.deploy --group fleet [--stations a,b,c | --replicas 3] [--data-root DIR]
                          [--auto-register-uavs] [--ingest] [--rpc-timeout S] [--rpc-max-retries N]
                          [--grace S]

Stations default to the Ray nodes that carry a `station:<name>` resource (cluster.yaml
starts every station that way). Waits for a leader, starts the group's controller (a
detached actor that replaces a lost station's member after --grace seconds) and prints the
group's status. A group that already runs is left as it is (its replicas recover from their
own disks when Ray restarts them; moving members is the controller's job).

Discovery comes from the environment (DISCOVERY_TYPE and its ETCD_*/CONSUL_* settings; by
default none is needed): with etcd or Consul, replicas and a station agent per station
register there under their own addresses and the placement map is kept in its KV; without,
the map is kept in the group's own replicated state.

Exit status: 0 deployed (or kept) with its controller holding the map; 1 the group runs but
the controller had not stored the map within --timeout (the JSON says what it reported);
2 bad usage or too few stations.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

from jobs.common import EXIT_USAGE, attach, finish, run

DISCOVERY_SETTINGS = ("DISCOVERY_TYPE", "ETCD_HOST", "ETCD_PORT", "CONSUL_HOST", "CONSUL_PORT", "CONSUL_HTTP_TOKEN")


def discovery_env() -> dict[str, str]:
    return {k: os.environ[k] for k in DISCOVERY_SETTINGS if os.environ.get(k)}


async def deploy_group(args: argparse.Namespace) -> int:
    from controlplane.actors import deploy, find_leader, group_replicas, start_ingest, start_station_agents
    from controlplane.client import ControlPlane
    from controlplane.controller import RayNodeStations
    from controlplane.controller_actor import start_controller
    from controlplane.placement.discovery import is_shared

    existing = group_replicas(args.group)
    discovery = discovery_env()
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
            discovery_env=discovery,
            rpc_stats=not args.no_rpc_stats,
        )
        action = "created"
    if is_shared(discovery):
        start_station_agents(stations, discovery)
    leader = await find_leader(handles, args.timeout)
    client = ControlPlane(args.group, handles)
    known = set(await client.query("stations"))
    for station in stations:  # the group's stations are fleet stations (UAVs can be homed there)
        if station not in known:
            await client.command({"type": "register_station", "station": station})
    status: list[dict[str, Any]] = [await h.status.remote() for h in handles.values()]
    # Where each replica runs, as the replicas say (a kept group's may have moved); the
    # controller stores it as the first map unless one is stored already.
    placement = {r["replica"]: r["station"] for r in status}
    controller = start_controller(args.group, args.data_root, placement, discovery, grace=args.grace)
    report = await controller_ready(controller, args.timeout)
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
            "placement": report.get("placement"),
            "controller": {k: report.get(k) for k in ("started", "discovery", "grace", "map_version", "error")},
            "ingest_actors": ingests,
        },
        ok=bool(report.get("started")),
    )


async def controller_ready(controller: Any, timeout: float) -> dict[str, Any]:
    """The controller's report once it has stored (or read back) the placement map; what it
    says after `timeout` seconds otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    report: dict[str, Any] = await controller.start.remote()
    while not (report.get("started") and report.get("map_version")):
        if loop.time() > deadline:
            print(f"the controller did not store the placement map within {timeout:g}s: {report}", file=sys.stderr)
            return report
        await asyncio.sleep(0.2)
        report = await controller.status.remote()
    return report


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
    p.add_argument(
        "--no-rpc-stats", action="store_true", help="keep no per-attempt RPC rows (rpc-stats/ Parquet); counters stay"
    )
    p.add_argument(
        "--grace", type=float, default=30.0, help="seconds a station may be down before its member is replaced"
    )
    p.add_argument("--address", default="auto")
    args = p.parse_args(argv)
    if args.grace < 0:
        p.error("--grace must be at least 0 seconds")
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
