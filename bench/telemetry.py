"""Telemetry throughput and latency: 3 replicas on Ray, N UAVs, rising report rates.

    python -m bench.telemetry [--uavs 10000] [--rates 100000,250000,...] [--step-seconds 3]
                              [--quick] [--json]

Three station ingest actors receive Arrow batches of UAV reports from this driver (each
report stamped with the time it was made); they coalesce them, encode each batch as a
segment and send it to the leader over its stream, which folds them into log entries. For every log entry
each replica records when it applied it (its change feed), so a report's latency is the
time from being made to being applied on *every* replica. Per offered rate it prints the
replicated-and-applied updates/s (reports that became the UAV's state: a report overtaken by
a newer one of the same UAV before it arrived is dropped as stale, and not counted) and
p50/p99 latency. The last line (--json) holds
updates_per_s (best sustained rate), p99_ms and p50_ms at that rate, and every step.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa

STATIONS = ["alpha", "bravo", "charlie"]
TICK = 0.05  # the driver sends one batch per station every TICK seconds
MAX_IN_FLIGHT = 4  # report calls per ingest actor: beyond that the system is not keeping up
GOAL_P99_MS = 250.0


def best_within(steps: list[dict[str, Any]], p99_ms: float) -> dict[str, Any] | None:
    """The step with the highest applied rate whose p99 held the bound; None when none did."""
    within = [s for s in steps if s["p99_ms"] <= p99_ms]
    return max(within, key=lambda s: s["updates_per_s"]) if within else None


def make_batch(uav_ids: pa.Array, reports: int, now: float, position: int, rng: np.random.Generator) -> pa.Table:
    """`reports` rows going round the station's UAVs from `position` (the count of reports
    this station sent before), all made at `now`; a UAV's seq counts its own reports."""
    n = len(uav_ids)
    sequence = position + np.arange(reports, dtype=np.int64)
    return pa.table(
        {
            "uav": uav_ids.take(pa.array(sequence % n)),
            "time": np.full(reports, now),
            "seq": sequence // n,
            "lat": 47.0 + rng.random(reports) * 0.1,
            "lon": 8.0 + rng.random(reports) * 0.1,
            "alt": 50.0 + rng.random(reports) * 10,
            "battery": 20.0 + rng.random(reports) * 80,
        }
    )


async def run_step(
    ingests: dict[str, Any], uav_ids: dict[str, pa.Array], rate: int, seconds: float, position: dict[str, int]
) -> dict[str, Any]:
    rng = np.random.default_rng(rate)
    per_station = max(1, int(rate * TICK / len(STATIONS)))
    in_flight: dict[str, list[Any]] = {s: [] for s in STATIONS}
    offered = skipped = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    ticks = int(seconds / TICK)
    for k in range(ticks):
        now = time.time()
        for s in STATIONS:
            in_flight[s] = [r for r in in_flight[s] if not _done(r)]
            if len(in_flight[s]) >= MAX_IN_FLIGHT:
                skipped += per_station  # backpressure: the ingest actor is behind
                continue
            batch = make_batch(uav_ids[s], per_station, now, position[s], rng)
            position[s] += per_station
            in_flight[s].append(ingests[s].report.remote(batch))
            offered += per_station
        await asyncio.sleep(max(0.0, start + (k + 1) * TICK - loop.time()))
    for refs in in_flight.values():
        await asyncio.gather(*refs)
    await asyncio.gather(*(i.flush.remote() for i in ingests.values()))
    return {"offered_rate": rate, "sent": offered, "skipped": skipped, "start": time.time() - (loop.time() - start)}


def _done(ref: Any) -> bool:
    import ray

    ready, _ = ray.wait([ref], timeout=0)
    return bool(ready)


async def visible_times(replicas: dict[int, Any]) -> dict[int, tuple[float, list[list[float]], int]]:
    """log index -> (applied on every replica at, report-time histogram, accepted reports)."""
    per_replica = await asyncio.gather(*(h.watch.remote(0, ["telemetry"], 0.1) for h in replicas.values()))
    out: dict[int, tuple[float, list[list[float]], int]] = {}
    counts: dict[int, int] = {}
    for answer in per_replica:
        if answer["reset"]:
            raise RuntimeError("a replica's change feed window no longer covers the run (raise the window)")
        for c in answer["changes"]:
            i = c["index"]
            seen = out.get(i)
            when = c["applied_at"] if seen is None else max(seen[0], c["applied_at"])
            out[i] = (when, c["report_times"], c["accepted"])
            counts[i] = counts.get(i, 0) + 1
    return {i: v for i, v in out.items() if counts[i] == len(replicas)}


def latencies(
    entries: dict[int, tuple[float, list[list[float]], int]], t0: float, t1: float
) -> tuple[np.ndarray, np.ndarray]:
    """Latency (s) and weight per histogram bucket, for reports made in [t0, t1)."""
    lat, weight = [], []
    for when, hist, _ in entries.values():
        for t, n in hist:
            if t0 <= t < t1:
                lat.append(when - t)
                weight.append(n)
    return np.array(lat), np.array(weight)


def weighted_percentile(values: np.ndarray, weights: np.ndarray, q: float) -> float:
    if len(values) == 0:
        return float("nan")
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, q / 100 * cum[-1])])


async def bench(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    import ray

    from controlplane.actors import deploy, find_leader, start_ingest
    from controlplane.client import ControlPlane
    from controlplane.sync.coalescer import CoalescerConfig

    group = f"bench{os.getpid()}"
    replicas = deploy(
        group,
        STATIONS,
        data_dir,
        auto_register_uavs=True,
        telemetry=CoalescerConfig(max_size=args.entry_mb << 20, max_delay=0.002, max_in_flight=2),
    )
    ingests = {
        s: start_ingest(
            group, s, CoalescerConfig(max_size=args.segment_rows, max_delay=args.ingest_delay, max_in_flight=1)
        )
        for s in STATIONS
    }
    try:
        await find_leader(replicas, 60)
        client = ControlPlane(group, replicas)
        for s in STATIONS:
            await client.command({"type": "register_station", "station": s})
        uav_ids = {
            s: pa.array([f"uav-{i:05d}" for i in range(k, args.uavs, len(STATIONS))]) for k, s in enumerate(STATIONS)
        }
        # The first reports register the UAVs at the station that heard them (auto-register).
        rng = np.random.default_rng(0)
        first = [
            ingests[s].report.remote(make_batch(uav_ids[s], len(uav_ids[s]), time.time(), 0, rng), wait=True)
            for s in STATIONS
        ]
        await asyncio.gather(*first)
        position = {s: len(uav_ids[s]) for s in STATIONS}
        count = (await client.query("counters"))["uavs"]
        if count != args.uavs:
            stats = await asyncio.gather(*(i.flush.remote() for i in ingests.values()))
            counters = await client.query("counters")
            raise RuntimeError(f"{count} of {args.uavs} UAVs registered by their first reports: {stats} {counters}")
        steps = []
        for rate in args.rates:
            sent = await run_step(ingests, uav_ids, rate, args.step_seconds, position)
            t0 = sent["start"]
            leader = replicas[await find_leader(replicas, 10)]
            target = (await leader.status.remote())["commit"]
            for h in replicas.values():  # wait until every replica applied the step
                deadline = time.monotonic() + 60
                while (await h.status.remote())["applied"] < target and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
            entries = await visible_times(replicas)
            t1 = t0 + args.step_seconds + 1
            lat, weight = latencies(entries, t0, t1)
            in_step = [(when, hist) for when, hist, _ in entries.values() if any(t0 <= t < t1 for t, _ in hist)]
            applied = int(weight.sum())
            span = (max(w for w, _ in in_step) - t0) if in_step else float("nan")
            step = {
                "offered_per_s": rate,
                "sent": sent["sent"],
                "skipped_backpressure": sent["skipped"],
                "applied": applied,
                "updates_per_s": round(applied / max(span, args.step_seconds)),
                "p50_ms": round(weighted_percentile(lat, weight, 50) * 1000, 1),
                "p99_ms": round(weighted_percentile(lat, weight, 99) * 1000, 1),
                "entries": len(in_step),
            }
            steps.append(step)
            if not args.json:
                print(
                    f"offered {rate:>9,}/s  applied on all replicas {step['updates_per_s']:>9,}/s  "
                    f"p50 {step['p50_ms']:>7.1f} ms  p99 {step['p99_ms']:>7.1f} ms  "
                    f"entries {step['entries']:>4}  dropped by backpressure {step['skipped_backpressure']:,}",
                    flush=True,
                )
            if sent["skipped"] > sent["sent"]:
                break  # far past saturation
        counters = (await client.query("counters"))["telemetry"]
        return {"steps": steps, "counters": counters}
    finally:
        for h in [*replicas.values(), *ingests.values()]:
            ray.kill(h, no_restart=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--uavs", type=int, default=10_000)
    p.add_argument("--rates", default="50000,100000,200000,400000,700000,1000000,1500000")
    p.add_argument("--step-seconds", type=float, default=4.0)
    p.add_argument("--entry-mb", type=int, default=16, help="most megabytes of segments per log entry")
    p.add_argument("--segment-rows", type=int, default=100_000, help="most reports per station segment")
    p.add_argument("--ingest-delay", type=float, default=0.02, help="seconds a station coalesces reports")
    p.add_argument("--quick", action="store_true", help="three short steps (about a minute in all)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    try:
        args.rates = [int(r) for r in args.rates.split(",")]
    except ValueError:
        p.error(f"--rates must be comma-separated integers, got {args.rates!r}")
    if args.quick:
        args.rates, args.step_seconds = [100_000, 300_000, 600_000], 2.0
    if args.uavs < len(STATIONS) or any(r < 1 for r in args.rates) or args.step_seconds <= 0:
        p.error("--uavs must be >= 3, rates positive, --step-seconds positive")

    import ray

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    data_dir = tempfile.mkdtemp(prefix="uav-bench-telemetry-")
    ray.init(
        address="local",
        include_dashboard=False,
        resources={f"station:{s}": 1 for s in STATIONS},
        logging_level=logging.ERROR,
        log_to_driver=False,
    )
    try:
        result = asyncio.run(bench(args, data_dir))
    finally:
        ray.shutdown()
        shutil.rmtree(data_dir, ignore_errors=True)
    steps = result["steps"]
    best = best_within(steps, GOAL_P99_MS)
    summary = {
        "bench": "telemetry",
        "uavs": args.uavs,
        "replicas": 3,
        # the best step that held p99 <= 250 ms (None: no step did)
        "updates_per_s": None if best is None else best["updates_per_s"],
        "p50_ms": None if best is None else best["p50_ms"],
        "p99_ms": None if best is None else best["p99_ms"],
        "peak_updates_per_s": max(s["updates_per_s"] for s in steps),
        "goal": {"updates_per_s": 1_000_000, "p99_ms": GOAL_P99_MS},
        "steps": steps,
        "counters": result["counters"],
    }
    if args.json:
        print(json.dumps(summary))
    else:
        held = (
            f"best with p99 <= {GOAL_P99_MS:.0f} ms: {best['updates_per_s']:,} updates/s (p99 {best['p99_ms']} ms)"
            if best is not None
            else f"no step held p99 <= {GOAL_P99_MS:.0f} ms"
        )
        print(f"{held}; peak {summary['peak_updates_per_s']:,} updates/s at any latency "
              "(goal 1,000,000/s, p99 <= 250 ms)")  # fmt: skip
    sys.stdout.flush()


if __name__ == "__main__":
    main()
