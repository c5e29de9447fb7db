"""Gathering RPC statistics: every replica flushes and sends its Parquet files (they live
on its own station's disk), written to OUT/<group>-<replica>/ as one dataset for pandas."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any


async def gather_stats(
    group: str, replicas: dict[int, Any], out: Path, since: float | None = None, until: float | None = None
) -> dict[str, Any]:
    """Every replica's files, or only the rows of since <= time < until (epoch seconds)."""
    from analysis.rpc_stats import load_rpc_stats

    results = await asyncio.gather(
        *(h.stats_files.remote(since, until) for h in replicas.values()), return_exceptions=True
    )
    written, failed = 0, {}
    for replica, files in zip(replicas, results, strict=True):
        if isinstance(files, BaseException):
            failed[str(replica)] = f"{type(files).__name__}: {files}"
            continue
        target = out / f"{group}-{replica}"
        target.mkdir(parents=True, exist_ok=True)
        for name, data in files:
            (target / name).write_bytes(data)
            written += 1
    frame = load_rpc_stats(out)
    return {
        "out": str(out),
        "files": written,
        "rows": len(frame),
        "replicas": sorted(frame["source"].unique().tolist()) if len(frame) else [],
        "window": {"since": since, "until": until},
        "failed": failed,
    }
