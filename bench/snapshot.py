"""Fleet snapshot and restore at scale: N UAVs and N missions (3 waypoints each).

    python -m bench.snapshot [--count 100000] [--json]

Builds the state directly (not through apply), then times a snapshot (Arrow IPC, zstd; of
it, the capture: what a replica does while it applies nothing) and restore(), and reports
the snapshot size and the process's peak RSS growth (set up as a replica's process is:
controlplane/process_memory.py; the collector paused as in a replica's snapshot jobs).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import time

from controlplane.process_memory import lean_arrow
from controlplane.state.fleet import FleetState
from controlplane.state.model import UAV, Mission, MissionStatus, UAVStatus, Waypoint, pack_route


def build(n: int, *, settled: bool = False) -> FleetState:
    """N UAVs and N missions. settled: as the scheduler would leave them (missions completed,
    a hundred pending that no UAV can take), so applying a command does no backlog of work."""
    s = FleetState()
    s.stations = {f"station-{i}" for i in range(50)}
    statuses = list(UAVStatus)
    for i in range(n):
        row = s.columns.allocate(
            f"uav-{i:06d}", {"battery": 50.0 + i % 50, "lat": 47 + (i % 1000) / 1000, "lon": 8 + (i % 997) / 1000}
        )
        s.columns.set_report(row, 1_700_000_000.0 + i, i)
        s.uavs[f"uav-{i:06d}"] = UAV(
            f"uav-{i:06d}", f"station-{i % 50}", row, statuses[i % len(statuses)], None, 1 + i % 7
        )
        s.missions[f"mission-{i:06d}"] = Mission(
            f"mission-{i:06d}",
            pack_route(Waypoint(47.0, 8.0 + k / 100, 50.0 + k) for k in range(3)),
            i % 5,
            101.0 if settled else 30.0,
            MissionStatus.PENDING if not settled or i < 100 else MissionStatus.COMPLETED,
            None,
            i + 1,
            1,
        )
    return s


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--count", type=int, default=100_000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.count < 1:
        p.error("--count must be positive")
    lean_arrow()  # as a replica's process does
    state = build(args.count)
    before = peak_rss_mb()
    gc.disable()  # as a replica's snapshot and restore jobs run (node.py, _collector_paused)
    t = time.perf_counter()
    encode = state.prepare_snapshot()  # what a replica does with its applies held
    capture_s = time.perf_counter() - t
    data = encode()
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    again = FleetState()
    again.restore(data)
    read_s = time.perf_counter() - t
    if again.digest() != state.digest():
        raise SystemExit("restored state differs from the original")
    result = {
        "uavs": args.count,
        "missions": args.count,
        "snapshot_s": round(write_s, 3),
        "of_it_capture_s": round(capture_s, 3),
        "restore_s": round(read_s, 3),
        "snapshot_mb": round(len(data) / 1e6, 2),
        "peak_rss_growth_mb": round(peak_rss_mb() - before, 1),
    }
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k:<20} {v}")


if __name__ == "__main__":
    main()
