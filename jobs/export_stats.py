"""Gather the RPC-stats Parquet files of every replica into one dataset directory.

    python -m jobs.export_stats --group fleet --out DIR

Each replica flushes and sends its files (they live on its own station's disk); they are
written to DIR/<group>-<replica>/. `analysis.rpc_stats.load_rpc_stats(DIR)` reads them all.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from jobs.common import EXIT_USAGE, attach, finish, run


async def export(args: argparse.Namespace) -> int:
    from analysis.rpc_stats import load_rpc_stats
    from controlplane.actors import group_replicas

    replicas = group_replicas(args.group)
    if not replicas:
        print(f"no replicas of group {args.group!r}: deploy it first", file=sys.stderr)
        return EXIT_USAGE
    out = Path(args.out)
    results = await asyncio.gather(*(h.stats_files.remote() for h in replicas.values()), return_exceptions=True)
    written, failed = 0, {}
    for replica, files in zip(replicas, results, strict=True):
        if isinstance(files, BaseException):
            failed[replica] = f"{type(files).__name__}: {files}"
            continue
        target = out / f"{args.group}-{replica}"
        target.mkdir(parents=True, exist_ok=True)
        for name, data in files:
            (target / name).write_bytes(data)
            written += 1
    frame = load_rpc_stats(out)
    return finish(
        {
            "out": str(out),
            "files": written,
            "rows": len(frame),
            "replicas": sorted(frame["source"].unique().tolist()) if len(frame) else [],
            "failed": failed,
        },
        ok=not failed,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.export_stats", description=__doc__.splitlines()[0])
    p.add_argument("--group", required=True)
    p.add_argument("--out", required=True, help="dataset directory (created)")
    p.add_argument("--address", default="auto")
    args = p.parse_args(argv)
    attach(args.address)
    return run(export(args))


if __name__ == "__main__":
    sys.exit(main())
