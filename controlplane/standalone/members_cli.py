"""`controlplane members list|add|remove`: a standalone group's membership, from any machine
that reaches the nodes' peer ports. The nodes are found the way the nodes find each other:
--nodes, or PEER_NODES, or discovery (DISCOVERY_TYPE=etcd|consul, DISCOVERY_SERVICE); the
cluster token comes from CLUSTER_TOKEN or CLUSTER_TOKEN_FILE.

    controlplane members add node_4      # started with NODE_JOIN=1; joins as a learner, then votes
    controlplane members remove node_1
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

from controlplane.node_client import NodeGroup
from controlplane.node_ids import raft_id_of
from controlplane.placement.discovery import DiscoveryError, create_service_discovery
from controlplane.standalone.config import (
    ConfigError,
    discovery_service,
    parse_peer_nodes,
    read_token,
)

EXIT_USAGE, EXIT_FAILED = 2, 1


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="controlplane members", description="A standalone group's membership")
    p.add_argument("--nodes", help="comma-separated peer URLs (http://host:NODE_PORT); default: from discovery")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the change to commit")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("list", help="every node's role, term and indices")
    sub.add_parser("add", help="add a node started with NODE_JOIN=1").add_argument("name")
    sub.add_parser("remove", help="remove a node from the group").add_argument("name")
    return p


async def node_urls(env: Mapping[str, str], explicit: str | None) -> list[str]:
    """The nodes' peer URLs: --nodes, else discovery (etcd, consul), else PEER_NODES."""
    if explicit:
        urls = [u.strip().rstrip("/") for u in explicit.split(",") if u.strip()]
        bad = [u for u in urls if not u.startswith(("http://", "https://"))]
        if bad or not urls:
            raise ConfigError("--nodes", f"must be comma-separated http:// URLs, got {explicit!r}")
        return urls
    kind = env.get("DISCOVERY_TYPE", "static").strip().lower()
    if kind in ("etcd", "consul"):
        discovery = create_service_discovery(env)
        try:
            found = await discovery.discover(discovery_service(env))
        finally:
            await discovery.close()
        if not found:
            raise ConfigError("DISCOVERY_TYPE", f"{kind} lists no {discovery_service(env)!r} nodes")
        return [f"http://{n.address}:{n.port}" for n in found]
    peers = parse_peer_nodes(env)
    if not peers:
        raise ConfigError("--nodes", "say where the nodes are: --nodes, PEER_NODES, or DISCOVERY_TYPE=etcd|consul")
    return [p.url for p in peers]


async def _run(args: argparse.Namespace, env: Mapping[str, str]) -> Any:
    group = NodeGroup(await node_urls(env, args.nodes), token=read_token(env, "CLUSTER_TOKEN"))
    try:
        if args.action == "list":
            return await group.status()
        raft_id = raft_id_of(args.name)
        if args.action == "add":
            await group.add_member(raft_id, args.timeout)
        else:
            await group.remove_member(raft_id, args.timeout)
        status = await group.leader_status(args.timeout)
        return {"ok": True, "node": args.name, "raft_id": raft_id, "voters": status["voters"],
                "learners": status["learners"]}  # fmt: skip
    finally:
        await group.close()


def main(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)
    try:
        answer = asyncio.run(_run(args, env))
    except (ConfigError, DiscoveryError) as exc:
        print(f"controlplane members: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except TimeoutError as exc:
        hint = "the change may or may not have committed: see `controlplane members list`; repeating it is safe"
        print(f"controlplane members {args.action}: {exc} ({hint})", file=sys.stderr)
        return EXIT_FAILED
    except Exception as exc:
        print(f"controlplane members {args.action}: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(answer, indent=2, sort_keys=True))
    elif args.action == "list":
        for s in answer:
            if "error" in s:
                print(f"{s.get('address', '?'):<28} unreachable: {s['error']}")
            else:
                print(f"{s['name']:<12} id {s['replica']:<6} {s['role']:<10} term {s['term']:<4} "
                      f"commit {s['commit']:<8} applied {s['applied']:<8} {s['address']}")  # fmt: skip
    else:
        print(f"{args.action} {args.name}: done; voters {answer['voters']}, learners {answer['learners']}")
    return 0
