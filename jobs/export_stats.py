"""Gather the RPC-stats Parquet files of every replica into one dataset directory.

    python -m jobs.export_stats --group fleet --out DIR [--since 2h | --since 2026-12-01T22:00Z] [--until ...]

Each replica flushes and sends its files (they live on its own station's disk); they are
written to DIR/<group>-<replica>/. `analysis.rpc_stats.load_rpc_stats(DIR)` reads them all.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from jobs.common import EXIT_USAGE, attach, finish, run


async def export(args: argparse.Namespace) -> int:
    from controlplane.actors import group_replicas
    from controlplane.stats_export import gather_stats

    replicas = group_replicas(args.group)
    if not replicas:
        print(f"no replicas of group {args.group!r}: deploy it first", file=sys.stderr)
        return EXIT_USAGE
    result = await gather_stats(args.group, replicas, Path(args.out), args.since, args.until)
    return finish(result, ok=not result["failed"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.export_stats", description=__doc__.splitlines()[0])
    p.add_argument("--group", required=True)
    p.add_argument("--out", required=True, help="dataset directory (created)")
    p.add_argument("--since", help="only rows from then on: ISO 8601 (UTC unless it says) or a duration back (2h)")
    p.add_argument("--until", help="only rows before then (same forms)")
    p.add_argument("--address", default="auto")
    args = p.parse_args(argv)
    from controlplane.rpc.stats_files import parse_time

    try:
        args.since = parse_time(args.since) if args.since else None
        args.until = parse_time(args.until) if args.until else None
    except ValueError as exc:
        p.error(str(exc))
    if args.since is not None and args.until is not None and args.since >= args.until:
        p.error("--since must be before --until")
    attach(args.address)
    return run(export(args))


if __name__ == "__main__":
    sys.exit(main())
