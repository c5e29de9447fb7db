"""Where telemetry's CPU goes: each part of the W4 path measured alone, then what the whole
path needs at the goal rate on this machine.

    python -m bench.telemetry_parts [--rate 1000000] [--uavs 10000] [--seconds 2] [--json]
                                    [--no-ray] [--no-pipeline]

`bench.telemetry` runs the load generator, 3 station ingest actors, 3 replicas and Ray's own
processes on the same 2 cores, so its ceiling says little about which part is the limit.
Here each part runs the production code on batches shaped as they are at `--rate` (the
driver's batch per station and tick, one segment per batch, one log entry per 3 segments):

  generate   the load generator making a batch (bench.telemetry.make_batch)
  ray_call   a batch handed to an actor as an argument (driver and actor CPU, real Ray)
  validate   a station checking a batch (state.telemetry.normalize)
  encode     a station encoding its segment (encode_segment)
  to_leader  a station's segment to the leader over the leader's stream, answered (both ends;
             the way segments go since 2026-12-03)
  ray_put    a station putting the segment in the object store, the leader getting it (the
             way they went before: kept for the comparison, and for replicas serving no stream)
  check      the leader re-checking a segment before it goes into the log (check_segment)
  join       the leader joining 3 stations' segments into one entry (join_segments)
  persist    one replica writing and fsyncing the entry (the WAL, persist/wal.py)
  stream     the leader sending the entry to one follower on the replicas' stream, and the
             follower reading and decoding it (rpc/stream.py; both ends in this process)
  apply      one replica applying the entry (FleetState.apply: last writer wins, change feed)
  pipeline   3 standalone nodes (`python -m controlplane node`, real processes): this
             process posts pre-encoded segments to the leader, which joins, persists,
             streams to the followers, commits and applies them; each node's CPU from /proc

Each part reports CPU microseconds per 1,000 reports and the reports/s one core sustains for
it. The budget then adds up what each process of bench.telemetry's set-up spends per report
and multiplies by the goal rate: the cores the whole path needs, and the busiest process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from bench.processes import CpuMeter
from bench.telemetry import STATIONS, TICK, make_batch

GOAL_RATE = 1_000_000
FEEDER = "feeder (this process)"
CORES = os.cpu_count() or 1


def measure(work: Callable[[int], Any], rows_per_call: int, seconds: float) -> dict[str, Any]:
    """Call work(k) for k = 0, 1, ... until `seconds` of wall time pass (at least 3 calls);
    CPU of this process (all its threads) and wall time per 1,000 rows."""
    calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
    while calls < 3 or time.perf_counter() - wall0 < seconds:
        work(calls)
        calls += 1
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return per_rows(cpu, wall, calls * rows_per_call)


def per_rows(cpu: float, wall: float, rows: int) -> dict[str, Any]:
    return {
        "rows": rows,
        "cpu_us_per_1k": round(cpu / rows * 1e9, 1),
        "wall_us_per_1k": round(wall / rows * 1e9, 1),
        "rows_per_s_one_core": round(rows / cpu) if cpu > 0 else None,
    }


def station_batches(uavs: int, rows: int, count: int) -> list[tuple[str, pa.Table]]:
    """`count` batches as the load generator makes them, round the stations, times rising."""
    rng = np.random.default_rng(7)
    ids = {s: pa.array([f"uav-{i:05d}" for i in range(k, uavs, len(STATIONS))]) for k, s in enumerate(STATIONS)}
    position = dict.fromkeys(STATIONS, 0)
    now = time.time()
    out = []
    for k in range(count):
        s = STATIONS[k % len(STATIONS)]
        out.append((s, make_batch(ids[s], rows, now + k * TICK / len(STATIONS), position[s], rng)))
        position[s] += rows
    return out


def in_process_parts(args: argparse.Namespace, rows: int, data_dir: Path) -> dict[str, dict[str, Any]]:
    from controlplane.persist.wal import FileLogStore
    from controlplane.raft.messages import Entry
    from controlplane.state.fleet import FleetState
    from controlplane.state.telemetry import check_segment, encode_segment, join_segments, normalize

    batches = station_batches(args.uavs, rows, max(6, int(args.seconds / TICK) * len(STATIONS)))
    tables = [normalize(table, station=station)[0] for station, table in batches]
    segments = [encode_segment(t) for t in tables]
    entries = [join_segments(segments[i : i + 3], auto_register=True) for i in range(0, len(segments) - 2, 3)]
    parts: dict[str, dict[str, Any]] = {}
    rng = np.random.default_rng(1)
    ids = pa.array([f"uav-{i:05d}" for i in range(args.uavs)])
    parts["generate"] = measure(lambda k: make_batch(ids, rows, time.time(), k * rows, rng), rows, args.seconds)
    parts["validate"] = measure(
        lambda k: normalize(batches[k % len(batches)][1], station=batches[k % len(batches)][0]), rows, args.seconds
    )
    parts["encode"] = measure(lambda k: encode_segment(tables[k % len(tables)]), rows, args.seconds)
    parts["check"] = measure(lambda k: check_segment(segments[k % len(segments)]), rows, args.seconds)
    parts["join"] = measure(lambda k: join_segments(segments[:3], auto_register=True), 3 * rows, args.seconds)

    (data_dir / "wal").mkdir()
    wal = FileLogStore(data_dir / "wal")

    def persist(k: int) -> None:
        wal.write([Entry(1, k + 1, entries[k % len(entries)])], None)
        wal.sync()
        if k % 64 == 63:
            wal.compact(k)  # keep the bench's own memory flat; a replica compacts after snapshots

    parts["persist"] = measure(persist, 3 * rows, args.seconds)
    parts["stream"] = stream_part(entries[0], 3 * rows, args.seconds)
    parts["to_leader"] = to_leader_part(segments[0], rows, args.seconds)
    wal.close()

    # A replica's state: the stations, every UAV (registered by its first report), the change
    # feed on. Each entry is applied once (a second time its reports would all be stale).
    state = FleetState()
    state.track_changes = True
    for i, station in enumerate(STATIONS, start=1):
        state.apply(Entry(1, i, json.dumps({"type": "register_station", "station": station}).encode()))
    first = pa.table({"uav": ids, "time": np.zeros(len(ids)), "seq": np.zeros(len(ids), dtype=np.int64)})
    registering = [normalize(first.filter(pa.array(np.arange(len(ids)) % 3 == k)), station=s)[0] for k, s in
                   enumerate(STATIONS)]  # fmt: skip
    state.apply(Entry(1, 10, join_segments([encode_segment(t) for t in registering], auto_register=True)))
    if len(state.uavs) != args.uavs:
        raise RuntimeError(f"{len(state.uavs)} of {args.uavs} UAVs registered")

    def apply(k: int) -> None:
        answer = state.apply(Entry(1, 11 + k, entries[k]))
        if not answer.get("ok") or answer["accepted"] == 0:
            raise RuntimeError(f"entry {k} was not applied: {answer}")
        state.drain_changes()

    applied = 0
    wall0, cpu0 = time.perf_counter(), time.process_time()
    while applied < len(entries) and (applied < 3 or time.perf_counter() - wall0 < args.seconds):
        apply(applied)
        applied += 1
    parts["apply"] = per_rows(time.process_time() - cpu0, time.perf_counter() - wall0, applied * 3 * rows)
    return parts


def stream_part(entry: bytes, rows: int, seconds: float) -> dict[str, Any]:
    """The leader sending one entry to one follower on the replicas' stream (StreamTransport
    to an HTTPTransportServer on 127.0.0.1, both in this process, so both sides count): the
    batch encoded, framed, written, read and decoded."""
    from controlplane.raft.codec import decode_batch, encode_batch
    from controlplane.raft.messages import AppendEntries, Entry
    from controlplane.rpc.config import RPCConfig
    from controlplane.rpc.http import HTTPTransportServer
    from controlplane.rpc.stream import StreamTransport

    async def run() -> dict[str, Any]:
        received = asyncio.Queue[int]()

        async def deliver(body: bytes) -> None:
            received.put_nowait(len(decode_batch(body)))

        server, transport = HTTPTransportServer(), StreamTransport(RPCConfig())
        await server.start(deliver)
        try:
            calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
            while calls < 3 or time.perf_counter() - wall0 < seconds:
                message = AppendEntries(1, 2, 1, calls, 1, (Entry(1, calls + 1, entry),), calls)
                await transport.send(server.address, encode_batch([message]), 10.0)
                await asyncio.wait_for(received.get(), 10.0)
                calls += 1
            return per_rows(time.process_time() - cpu0, time.perf_counter() - wall0, calls * rows)
        finally:
            await transport.close()
            await server.close()

    return asyncio.run(run())


def to_leader_part(segment: bytes, rows: int, seconds: float) -> dict[str, Any]:
    """A station's segment to the leader on the leader's stream (LeaderStream to the replica's
    route on an HTTPTransportServer on 127.0.0.1, both in this process, so both sides count),
    the leader's stand-in answering at once: framed, written, read, answered."""
    from controlplane.leader_stream.connection import LeaderStream
    from controlplane.leader_stream.server import leader_stream_route
    from controlplane.rpc.http import HTTPTransportServer

    class Leader:
        async def submit_segments(self, segments: list[bytes], timeout: float = 10.0) -> list[Any]:
            return [{"accepted": rows, "bytes": len(segments[0])}]

        async def propose_many(self, commands: list[bytes], timeout: float = 5.0) -> list[tuple[str, Any]]:
            raise NotImplementedError

        async def query_many(self, queries: list[Any], consistency: str = "linearizable") -> list[tuple[bool, Any]]:
            raise NotImplementedError

    async def run() -> dict[str, Any]:
        async def deliver(body: bytes) -> None:
            pass

        server = HTTPTransportServer()
        await server.start(deliver, [leader_stream_route(Leader())])
        stream = LeaderStream(server.address, None)
        try:
            calls, wall0, cpu0 = 0, time.perf_counter(), time.process_time()
            while calls < 3 or time.perf_counter() - wall0 < seconds:
                await stream.submit_segment(segment, 10.0)
                calls += 1
            return per_rows(time.process_time() - cpu0, time.perf_counter() - wall0, calls * rows)
        finally:
            await stream.close()
            await server.close()

    return asyncio.run(run())


def ray_parts(rows: int, seconds: float) -> dict[str, dict[str, Any]]:
    """A batch as an actor-call argument, and a segment through the object store, on real Ray:
    the CPU of the sending process plus the receiving actor's, per 1,000 rows."""
    import ray

    from controlplane.state.telemetry import encode_segment, normalize

    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:

        @ray.remote(num_cpus=0.01)
        class Receiver:
            def cpu(self) -> float:
                return time.process_time()

            def take(self, table: pa.Table) -> int:
                return int(table.num_rows)

            def get(self, refs: list[Any]) -> int:
                return sum(len(b) for b in ray.get(refs))

        receiver = Receiver.remote()  # type: ignore[attr-defined]
        ray.get(receiver.cpu.remote())
        station, table = station_batches(3 * 1000, rows, 1)[0]
        segment = encode_segment(normalize(table, station=station)[0])

        def both_sides(work: Callable[[int], Any]) -> dict[str, Any]:
            actor0 = ray.get(receiver.cpu.remote())
            wall0, cpu0, calls = time.perf_counter(), time.process_time(), 0
            while calls < 3 or time.perf_counter() - wall0 < seconds:
                work(calls)
                calls += 1
            sender, taker = time.process_time() - cpu0, ray.get(receiver.cpu.remote()) - actor0
            part = per_rows(sender + taker, time.perf_counter() - wall0, calls * rows)
            part["receiver_cpu_us_per_1k"] = round(taker / (calls * rows) * 1e9, 1)
            return part

        calls = {
            "ray_call": both_sides(lambda k: ray.get(receiver.take.remote(table))),
            "ray_put": both_sides(lambda k: ray.get(receiver.get.remote([ray.put(segment)]))),
        }
        # What the same round trip costs with nothing to carry: Ray's per-call floor.
        empty = both_sides(lambda k: ray.get(receiver.cpu.remote()))
        for part in calls.values():
            part["of_which_call_floor_cpu_us_per_1k"] = empty["cpu_us_per_1k"]
        return calls
    finally:
        ray.shutdown()


def pipeline_part(args: argparse.Namespace, rows: int, base: Path) -> dict[str, Any]:
    """3 standalone nodes; this process posts pre-encoded segments to the leader (6 in flight:
    two per station, as bench.telemetry's ingests have at most 2 at the leader) for
    `seconds`. Reports applied on every node per second, and each process's CPU per report."""
    from bench.restart import load
    from bench.standalone_nodes import CLUSTER_TOKEN, running_group
    from controlplane.node_client import NodeGroup
    from controlplane.state.telemetry import encode_segment, normalize

    count = max(6, int(args.seconds * args.rate / rows) + 6)
    print(f"pipeline: encoding {count} segments of {rows:,} reports", file=sys.stderr, flush=True)
    segments = [encode_segment(normalize(t, station=s)[0]) for s, t in station_batches(args.uavs, rows, count)]
    registering = [
        [json.dumps({"type": "register_station", "station": s}).encode() for s in STATIONS],
        [json.dumps({"type": "register_uav", "uav": f"uav-{i:05d}", "home_station": STATIONS[i % 3]}).encode()
         for i in range(args.uavs)],
    ]  # fmt: skip
    with running_group(base) as nodes:

        async def run() -> dict[str, Any]:
            group = NodeGroup([nodes.peer_url(n) for n in nodes.nodes], token=CLUSTER_TOKEN)
            try:
                await load(group, registering, concurrency=64)
                leader = nodes.leader()
                meter = CpuMeter({("leader" if n == leader else n): [p.pid] for n, p in nodes.procs.items()},
                                 own=FEEDER)  # fmt: skip
                meter.start()
                wall0 = time.perf_counter()
                todo = iter(segments)
                accepted: dict[int, int] = {}  # log index -> reports accepted (an entry holds several segments)
                latency: list[float] = []
                sent = [0]

                async def feeder() -> None:
                    for segment in todo:
                        began = time.perf_counter()
                        applied = await group.submit_segment(segment, timeout=60.0)
                        latency.append(time.perf_counter() - began)
                        sent[0] += rows
                        accepted[applied["index"]] = applied["accepted"]
                        if time.perf_counter() - wall0 > args.seconds:
                            return

                await asyncio.gather(*(feeder() for _ in range(6)))
                status = await group.status()
                target = max(s.get("commit", 0) for s in status)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    status = await group.status()
                    if len(status) == 3 and all(s.get("applied", -1) >= target for s in status):
                        break
                    await asyncio.sleep(0.02)
                else:
                    raise RuntimeError(f"the nodes did not apply index {target} within 60 s: {status}")
                wall = time.perf_counter() - wall0
                reports = sum(accepted.values())
                if reports < sent[0] // 2:
                    raise RuntimeError(f"only {reports:,} of {sent[0]:,} reports sent were accepted")
                cpu = meter.spent()
            finally:
                await group.close()
            # CPU per report sent: a report overtaken by a newer one in flight costs the same work
            per_report = {n: round(c / sent[0] * 1e9, 1) for n, c in cpu.items()}
            return {
                "reports_sent": sent[0],
                "reports_accepted": reports,
                "reports_per_s_on_every_node": round(reports / wall),
                "submit_p50_ms": round(float(np.percentile(latency, 50)) * 1000, 1),
                "submit_p99_ms": round(float(np.percentile(latency, 99)) * 1000, 1),
                "cpu_us_per_1k_by_process": per_report,
                "cpu_percent_by_process": {n: round(c / wall * 100) for n, c in cpu.items() if n != FEEDER},
            }

        return asyncio.run(run())


def budget(parts: dict[str, dict[str, Any]], pipeline: dict[str, Any] | None, rate: int) -> dict[str, Any]:
    """CPU per report of each process of bench.telemetry's set-up, and the cores it needs at
    `rate`. Replicas take their CPU from the pipeline run when there is one (it includes the
    transport between them), else from persist + apply (+ check + join on the leader)."""
    us = {name: p["cpu_us_per_1k"] / 1000 for name, p in parts.items()}

    def receiver(name: str) -> float:  # the receiving process's share of a Ray part
        return parts[name]["receiver_cpu_us_per_1k"] / 1000 if name in parts else 0.0

    call_taker = receiver("ray_call")
    call_sender = us.get("ray_call", 0.0) - call_taker
    # A segment to the leader on its stream: both ends in one process, half to each.
    segment_taker = segment_sender = us["to_leader"] / 2
    processes = {
        "load generator": us["generate"] + call_sender,
        "station ingests (3, together)": us["validate"] + us["encode"] + call_taker + segment_sender,
    }
    if pipeline is not None:
        by = pipeline["cpu_us_per_1k_by_process"]
        followers = [v / 1000 for n, v in by.items() if n not in ("leader", FEEDER)]
        processes["leader replica"] = by["leader"] / 1000 + segment_taker
        for i, f in enumerate(followers, start=1):
            processes[f"follower replica {i}"] = f
    else:  # the stream part counts both of its ends: half of it to each
        replica = us["persist"] + us["apply"]
        processes["leader replica"] = us["check"] + us["join"] + replica + us["stream"] + segment_taker
        for i in (1, 2):
            processes[f"follower replica {i}"] = replica + us["stream"] / 2
    cores = {name: round(v * rate / 1e6, 2) for name, v in processes.items()}
    busiest = max(cores, key=lambda n: cores[n] if "together" not in n else cores[n] / 3)
    total = round(sum(cores.values()), 2)
    return {
        "rate": rate,
        "cores_needed_by_process": cores,
        "cores_needed": total,
        "cores_here": CORES,
        "fits": total <= CORES and all(c <= 1 for n, c in cores.items() if "together" not in n),
        "busiest_process": busiest,
        "busiest_process_rate_one_core": round(rate / cores[busiest] * (3 if "together" in busiest else 1)),
        "not_counted": "Ray's raylet and GCS (bench.telemetry measured the raylet at ~18% of a core at 300k/s)",
    }


def follower_source(parts: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """What moving an entry's bytes to one follower costs (CPU per 1,000 reports, both ends):
    the leader's stream, against the follower reading the stations' segments from Ray's
    object store (its get; the leader would still send a small message naming them)."""
    if "ray_put" not in parts:
        return None
    stream = parts["stream"]["cpu_us_per_1k"]
    object_store = parts["ray_put"]["receiver_cpu_us_per_1k"]
    return {
        "stream_us_per_1k": stream,
        "object_store_get_us_per_1k": object_store,
        "cheaper": "stream" if stream <= object_store else "object store",
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=int, default=GOAL_RATE, help="reports/s whose batch shapes are measured")
    p.add_argument("--uavs", type=int, default=10_000)
    p.add_argument("--seconds", type=float, default=2.0, help="per part")
    p.add_argument("--no-ray", action="store_true", help="skip the Ray parts (no ray.init)")
    p.add_argument("--no-pipeline", action="store_true", help="skip the 3-node pipeline")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.rate < 1 or args.uavs < len(STATIONS) or args.seconds <= 0:
        p.error("--rate must be positive, --uavs >= 3, --seconds positive")
    rows = max(1, int(args.rate * TICK / len(STATIONS)))
    with tempfile.TemporaryDirectory(prefix="bench-telemetry-parts-") as tmp:
        parts = in_process_parts(args, rows, Path(tmp))
        if not args.no_ray:
            parts.update(ray_parts(rows, args.seconds))
        pipeline = None if args.no_pipeline else pipeline_part(args, rows, Path(tmp))
    result = {
        "bench": "telemetry_parts",
        "rate": args.rate,
        "rows_per_batch": rows,
        "parts": parts,
        "pipeline": pipeline,
        "budget": budget(parts, pipeline, args.rate),
        "follower_source": follower_source(parts),
    }
    if args.json:
        print(json.dumps(result))
        return
    print(f"batches of {rows:,} reports (one station's share of {args.rate:,}/s per {TICK * 1000:.0f} ms tick)")
    for name, part in parts.items():
        print(f"  {name:<10} {part['cpu_us_per_1k']:>9,.1f} us CPU per 1k reports   "
              f"one core: {part['rows_per_s_one_core'] or 0:>12,} reports/s")  # fmt: skip
    if pipeline is not None:
        print(f"  pipeline   {pipeline['reports_per_s_on_every_node']:>9,} reports/s on every node, submit p50 "
              f"{pipeline['submit_p50_ms']} ms p99 {pipeline['submit_p99_ms']} ms; CPU % "
              f"{pipeline['cpu_percent_by_process']}")  # fmt: skip
    b = result["budget"]
    print(f"at {args.rate:,}/s the path needs {b['cores_needed']} cores ({CORES} here): {b['cores_needed_by_process']}")
    print(f"busiest process: {b['busiest_process']} (one core holds {b['busiest_process_rate_one_core']:,}/s)")
    source = result["follower_source"]
    if source is not None:
        print(f"an entry's bytes to one follower: the leader's stream {source['stream_us_per_1k']} us per 1k "
              f"reports, a get from the object store {source['object_store_get_us_per_1k']} us")  # fmt: skip


if __name__ == "__main__":
    main()
