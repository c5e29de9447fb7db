"""Replay recorded UAV reports (Parquet or CSV) through the stations' ingest actors at N times
the recorded speed; prints what was accepted, rejected (with reasons), stale and duplicate.

    python -m jobs.telemetry_replay FILE --group fleet [--speed 10] [--station alpha]

Rows go to the ingest actor of their `station` column (or --station for all). The file's
`time` column paces the replay: a window of 100 ms of recorded time is sent together.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import Counter
from typing import Any

from jobs.common import EXIT_USAGE, attach, finish, progress, run

WINDOW = 0.1  # seconds of recorded time per send


def read_reports(path: str) -> Any:
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    if path.endswith(".parquet"):
        return pq.read_table(path)
    if path.endswith(".csv"):
        return pacsv.read_csv(path)
    raise ValueError(f"{path}: use a .parquet or .csv file")


async def replay(args: argparse.Namespace) -> int:
    import numpy as np
    import pyarrow as pa

    from controlplane.actors import start_ingest

    try:
        table = read_reports(args.file)
    except (ValueError, OSError) as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if "time" not in table.column_names:
        print(f"{args.file}: a 'time' column (seconds) is required to pace the replay", file=sys.stderr)
        return EXIT_USAGE
    if args.station:
        table = table.drop_columns([c for c in ["station"] if c in table.column_names])
        stations = np.full(table.num_rows, args.station, dtype=object)
    elif "station" in table.column_names:
        stations = np.array(table.column("station").to_pylist(), dtype=object)
        table = table.drop_columns(["station"])
    else:
        print(f"{args.file}: no 'station' column: pass --station", file=sys.stderr)
        return EXIT_USAGE
    times = table.column("time").cast("float64").to_numpy(zero_copy_only=False)
    order = np.argsort(times, kind="stable")
    table, stations, times = table.take(order), stations[order], times[order]
    ingests = {s: start_ingest(args.group, str(s)) for s in sorted(set(stations.tolist()))}
    t0, wall0 = float(np.nanmin(times)) if len(times) else 0.0, time.monotonic()
    totals: Counter[str] = Counter()
    reasons: list[dict[str, Any]] = []
    entries: dict[int, dict[str, Any]] = {}  # log entries the reports went in (stations share them)
    pending = []
    start = 0
    while start < table.num_rows:
        window_end = times[start] + WINDOW
        stop = int(np.searchsorted(times, window_end, side="left"))
        stop = max(stop, start + 1)
        delay = (times[start] - t0) / args.speed - (time.monotonic() - wall0)
        if delay > 0:
            await asyncio.sleep(delay)
        chunk, where = table.slice(start, stop - start), stations[start:stop]
        for s, actor in ingests.items():
            mask = where == s
            if mask.any():
                pending.append(actor.report.remote(chunk.filter(pa.array(mask)), wait=True))
        start = stop
        if len(pending) >= 16:
            await _collect(pending, totals, reasons, entries)
            progress(start, table.num_rows, "reports", wall0)
    await _collect(pending, totals, reasons, entries)
    progress(table.num_rows, table.num_rows, "reports", wall0)
    for key in ("accepted", "stale", "duplicate", "registered"):
        totals[key] = sum(e[key] for e in entries.values())
    # Refused by the replicas: unknown UAVs (not auto-registered, or their station is not a
    # fleet station) or values the station let through but the fleet rules refuse.
    totals["rejected_on_apply"] = sum(e["rejected"] for e in entries.values())
    return finish(
        {"file": args.file, "reports": table.num_rows, **dict(totals), "reasons": reasons[:100]},
        ok=totals["rejected"] == 0 and totals["rejected_on_apply"] == 0,
    )


async def _collect(
    pending: list[Any], totals: Counter[str], reasons: list[dict[str, Any]], entries: dict[int, dict[str, Any]]
) -> None:
    for answer in await asyncio.gather(*pending):
        totals["accepted_at_station"] += answer["accepted"]
        totals["rejected"] += answer["rejected"]
        reasons.extend(answer["reasons"])
        entries.update((a["index"], a) for a in answer["applied"] or [])
    pending.clear()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.telemetry_replay", description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--group", required=True)
    p.add_argument("--speed", type=float, default=1.0, help="replay speed: 10 = ten times faster than recorded")
    p.add_argument("--station", help="send every row through this station's ingest actor")
    p.add_argument("--address", default="auto")
    args = p.parse_args(argv)
    if not args.speed > 0:
        p.error("--speed must be positive")
    attach(args.address)
    return run(replay(args))


if __name__ == "__main__":
    sys.exit(main())
