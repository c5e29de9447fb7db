"""The `controlplane` command (also `python -m controlplane`).

    controlplane [--group G] [--address A | --nodes URL,...] [--json] [--stale] COMMAND ...

    status                                   replicas (role, term, commit, members), the placement
                                             map and each station's health
    missions submit FILE | list [--status S] | get ID | abort ID
    uav list [--station S] [--status S] [--bbox LAT,LON,LAT,LON] | get ID
    groups list | get ID | create ID | add ID UAV | remove ID UAV | dissolve ID
    stats export --out DIR                   every replica's RPC-stats Parquet into DIR
    demo ... | sim ...                       the main job / the Raft simulator
    node | members list|add|remove           a standalone node (no Ray) / its group's membership

Tables for people, one JSON document on stdout with --json. Exit status: 0 done, 1 refused
or not found (the output says why), 2 bad usage, 3 the cluster or the group is unreachable.
The group defaults to $CONTROLPLANE_GROUP or "fleet"; the address to "auto" (the running
Ray cluster; with token auth, RAY_AUTH_MODE=token and the cluster's token must be set).
With --nodes (or $CONTROLPLANE_NODES) the commands go to standalone nodes' peer ports
instead, without Ray, with the cluster token from $CLUSTER_TOKEN or $CLUSTER_TOKEN_FILE.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from controlplane.console import emit_json, progress, table
from controlplane.leader_client import ControlPlaneError

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3


class Refused(Exception):
    """The cluster answered no (a rejected command, an unknown id)."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="controlplane", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--group", default=os.environ.get("CONTROLPLANE_GROUP", "fleet"))
    p.add_argument("--address", default="auto", help="Ray cluster address (default: the running cluster)")
    p.add_argument(
        "--nodes",
        default=os.environ.get("CONTROLPLANE_NODES") or None,
        help="standalone nodes' peer URLs, comma-separated (no Ray; one is enough)",
    )
    p.add_argument("--json", action="store_true", help="one JSON document on stdout")
    p.add_argument("--stale", action="store_true", help="read any replica, without a ReadIndex round")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="the group's replicas")

    missions = sub.add_parser("missions").add_subparsers(dest="action", required=True)
    submit = missions.add_parser("submit", help="missions from a JSON, YAML or CSV file")
    submit.add_argument("file")
    submit.add_argument("--clients", type=int, default=4)
    listing = missions.add_parser("list")
    listing.add_argument("--status")
    for action in ("get", "abort"):
        missions.add_parser(action).add_argument("id")

    uav = sub.add_parser("uav").add_subparsers(dest="action", required=True)
    uav_list = uav.add_parser("list")
    uav_list.add_argument("--station")
    uav_list.add_argument("--status")
    uav_list.add_argument("--bbox", help="min_lat,min_lon,max_lat,max_lon")
    uav.add_parser("get").add_argument("id")

    groups = sub.add_parser("groups").add_subparsers(dest="action", required=True)
    groups.add_parser("list")
    for action in ("get", "create", "dissolve"):
        groups.add_parser(action).add_argument("id")
    for action in ("add", "remove"):
        member = groups.add_parser(action)
        member.add_argument("id")
        member.add_argument("uav")

    stats = sub.add_parser("stats").add_subparsers(dest="action", required=True)
    export = stats.add_parser("export")
    export.add_argument("--out", required=True)
    export.add_argument("--since", help="only rows from then on: ISO 8601 or a duration back (2h)")
    export.add_argument("--until", help="only rows before then (same forms)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "node":  # configured by the environment, as the specification does
        from controlplane.standalone.process import HELP
        from controlplane.standalone.process import main as node_main

        if argv[1:] in (["-h"], ["--help"]):
            print(HELP)
            return 0
        if argv[1:]:
            print("controlplane node: takes no arguments; it is configured by environment variables (see --help)",
                  file=sys.stderr)  # fmt: skip
            return 2
        return node_main()
    if argv and argv[0] == "members":  # a standalone group's membership
        from controlplane.standalone.members_cli import main as members_main

        return members_main(argv[1:])
    if argv and argv[0] in ("demo", "sim"):  # their own options
        if argv[0] == "demo":
            from controlplane.demo import main as demo_main

            return demo_main(argv[1:])
        from controlplane.sim.__main__ import main as sim_main

        return sim_main(argv[1:])
    args = _parser().parse_args(argv)
    try:
        if args.nodes is None:
            from controlplane.client import attach

            attach(args.address)
        return asyncio.run(_run(args))
    except Refused as exc:
        _fail(args, str(exc))
        return REFUSED
    except (ConnectionError, TimeoutError, ControlPlaneError) as exc:
        _fail(args, str(exc))
        return UNREACHABLE
    except ValueError as exc:  # a bad --nodes or token setting
        _fail(args, str(exc))
        return USAGE


def _fail(args: argparse.Namespace, message: str) -> None:
    if args.json:
        emit_json({"ok": False, "error": message})
    else:
        print(f"controlplane: {message}", file=sys.stderr)


async def _connect(args: argparse.Namespace) -> Any:
    if args.nodes is not None:
        from controlplane.node_client import NodeGroup
        from controlplane.standalone.config import read_token
        from controlplane.standalone.members_cli import node_urls

        return NodeGroup(await node_urls(os.environ, args.nodes), token=read_token(os.environ, "CLUSTER_TOKEN"))
    from controlplane.client import ControlPlane
    from controlplane.ray_group import group_replicas

    replicas = group_replicas(args.group)
    if not replicas:
        raise ConnectionError(f"no replicas of group {args.group!r} in this cluster; deploy it (python -m jobs.deploy)")
    return ControlPlane(args.group, replicas)


async def _run(args: argparse.Namespace) -> int:
    cp = await _connect(args)
    try:
        return await _dispatch(args, cp)
    finally:
        if hasattr(cp, "close"):
            await cp.close()


async def _dispatch(args: argparse.Namespace, cp: Any) -> int:
    handler = {
        "status": _status,
        "missions": _missions,
        "uav": _uav,
        "groups": _groups,
        "stats": _stats,
    }[args.command]
    result: int = await handler(args, cp)
    return result


async def _query(args: argparse.Namespace, cp: Any, name: str, query_args: dict[str, Any] | None = None) -> Any:
    from controlplane.state.model import CommandError

    try:
        return await cp.query(name, query_args, "stale" if args.stale else "linearizable")
    except CommandError as exc:
        raise Refused(str(exc)) from None
    except Exception as exc:
        cause = getattr(exc, "cause", None)
        if isinstance(cause, CommandError):
            raise Refused(str(cause)) from None
        raise


async def _command(cp: Any, command: dict[str, Any]) -> dict[str, Any]:
    from controlplane.state.model import CommandError

    try:
        answer: dict[str, Any] = await cp.command(command)
    except CommandError as exc:
        raise Refused(str(exc)) from None
    if not answer["ok"]:
        raise Refused(f"{answer['field']}: {answer['error']}")
    return answer


def _show(args: argparse.Namespace, value: Any, columns: list[str] | None = None) -> int:
    if args.json:
        emit_json(value)
    elif columns is not None:
        print(table(value, columns))
    else:
        for key, item in value.items():
            print(f"{key:<14} {item}")
    return OK


async def _status(args: argparse.Namespace, cp: Any) -> int:
    rows = await cp.status()
    controller = await _controller_report(args) if args.nodes is None else None
    if args.json:
        emit_json({"replicas": rows, "controller": controller})
        return OK
    columns = ["replica", "station", "address", "role", "term", "leader", "commit", "applied", "voters", "uavs"]
    print(table(rows, [*columns, "error"]))
    if controller is None:
        if args.nodes is None:
            print(f"\nno controller runs for group {args.group!r}: nothing replaces a lost station's member "
                  "(python -m jobs.deploy starts one)")  # fmt: skip
        return OK
    if not controller.get("started"):
        print(f"\ncontroller starting: {controller.get('error') or 'not ready yet'}")
        return OK
    print(
        f"\nplacement map (version {controller['map_version']}, kept in {controller['discovery']}); "
        f"a station down for {controller['grace']:g}s loses its member"
    )
    stations = [
        {**s, "replicas": ",".join(map(str, s["replicas"])) or "-", "healthy": "yes" if s["healthy"] else "NO",
         "down_for": "" if s["unhealthy_for"] is None else f"{s['unhealthy_for']:.0f}s"}
        for s in controller["stations"]
    ]  # fmt: skip
    print(table(stations, ["station", "healthy", "down_for", "address", "replicas"]))
    for done in controller.get("replaced", []):
        print(f"replaced {done['old']} on {done['from']} by {done['new']} on {done['to']} ({done['reason']}; "
              f"station seen down {done['down_for']:.1f}s, membership change {done['took']:.1f}s)")  # fmt: skip
    last = controller.get("last_pass") or {}
    if last and not last.get("ok"):
        print(f"last reconcile pass failed: {last.get('error')}")
    return OK


async def _controller_report(args: argparse.Namespace) -> dict[str, Any] | None:
    """The group's controller's map and station health; None when no controller runs."""
    import ray

    from controlplane.controller_actor import find_controller

    controller = find_controller(args.group)
    if controller is None:
        return None
    try:
        report: dict[str, Any] = await asyncio.wait_for(controller.status.remote(), 10)
    except (ray.exceptions.RayError, TimeoutError) as exc:
        return {"started": False, "error": f"the controller does not answer: {type(exc).__name__}: {exc}"}
    return report


async def _missions(args: argparse.Namespace, cp: Any) -> int:
    if args.action == "list":
        rows = await _query(args, cp, "missions", {"status": args.status} if args.status else None)
        return _show(args, rows, ["id", "status", "priority", "uav", "version"])
    if args.action == "get":
        return _show(args, await _query(args, cp, "mission", {"id": args.id}))
    if args.action == "abort":
        answer = await _command(cp, {"type": "set_mission_status", "mission": args.id, "status": "aborted"})
        return _show(args, answer)
    return await _submit(args, cp)


async def _submit(args: argparse.Namespace, cp: Any) -> int:
    from controlplane.missions_file import load_missions, submit_missions

    try:
        parsed = load_missions(args.file)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    started = time.monotonic()
    clients = [cp] + [cp.another() for _ in range(max(1, args.clients) - 1)]
    quiet = args.json or not sys.stderr.isatty()
    try:
        refused = await submit_missions(
            parsed, clients, None if quiet else (lambda done, n: progress(done, n, "missions", started))
        )
    finally:
        for extra in clients[1:]:
            if hasattr(extra, "close"):
                await extra.close()
    invalid = [b.to_dict() for b in parsed.bad]
    result = {"file": args.file, "created": len(parsed.commands) - len(refused), "invalid": invalid, "refused": refused}
    if args.json:
        emit_json(result)
    else:
        for row in sorted(invalid + refused, key=lambda r: r["line"]):
            print(f"{args.file}:{row['line']}: {row['reason']}", file=sys.stderr)
        print(f"{result['created']} missions created, {len(invalid)} invalid, {len(refused)} refused")
    return OK if not invalid and not refused else REFUSED


async def _uav(args: argparse.Namespace, cp: Any) -> int:
    if args.action == "get":
        return _show(args, await _query(args, cp, "uav", {"id": args.id}))
    query: dict[str, Any] = {k: v for k, v in (("station", args.station), ("status", args.status)) if v}
    if args.bbox:
        try:
            query["bbox"] = [float(x) for x in args.bbox.split(",")]
        except ValueError:
            raise Refused(f"--bbox must be four numbers min_lat,min_lon,max_lat,max_lon, got {args.bbox!r}") from None
    rows = await _query(args, cp, "uavs", query)
    return _show(args, rows, ["id", "home_station", "status", "battery", "lat", "lon", "alt", "mission", "version"])


async def _groups(args: argparse.Namespace, cp: Any) -> int:
    if args.action == "list":
        return _show(args, await _query(args, cp, "groups"), ["id", "members", "version"])
    if args.action == "get":
        return _show(args, await _query(args, cp, "group", {"id": args.id}))
    command: dict[str, Any] = {
        "create": {"type": "create_group", "group": args.id},
        "dissolve": {"type": "dissolve_group", "group": args.id},
        "add": {"type": "add_member", "group": args.id, "uav": getattr(args, "uav", None)},
        "remove": {"type": "remove_member", "group": args.id, "uav": getattr(args, "uav", None)},
    }[args.action]
    return _show(args, await _command(cp, command))


async def _stats(args: argparse.Namespace, cp: Any) -> int:
    from controlplane.stats_export import gather_stats

    if args.nodes is not None:
        raise Refused(
            "stats export gathers the replicas' files through Ray; a standalone node keeps its RPC statistics in "
            "DATA_DIR/rpc-stats (Parquet): analysis.rpc_stats.load_rpc_stats reads that directory"
        )
    from controlplane.rpc.stats_files import parse_time

    try:
        since = parse_time(args.since) if args.since else None
        until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        raise Refused(str(exc)) from None
    result = await gather_stats(cp.group, cp.replicas, Path(args.out), since, until)
    _show(args, result)
    return OK if not result["failed"] else REFUSED
