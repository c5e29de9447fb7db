"""A replica's process converts Python values to Arrow (snapshots, telemetry) without
pyarrow importing pandas (~58 MB), on the system allocator, and pandas still works where it
is asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import sys
from controlplane.process_memory import lean_arrow, release_free_memory
{setup}
from bench.snapshot import build
state = build(50)
state.snapshot()
release_free_memory()
print("after snapshot", "pandas" in sys.modules)
import pyarrow as pa
print("to_pandas rows", len(pa.table({{"a": ["x", "y"]}}).to_pandas()))
"""


def run(setup: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(setup=setup)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_a_lean_process_snapshots_without_importing_pandas():
    out = run("lean_arrow()")
    assert "after snapshot False" in out and "to_pandas rows 2" in out


def test_without_it_pyarrow_imports_pandas():
    """The saving is real: this pyarrow does import pandas on its first conversion."""
    assert "after snapshot True" in run("")


def _growth_over_snapshots(lean: bool) -> float:
    probe = f"""
import os
from controlplane.process_memory import lean_arrow, release_free_memory
if {lean}:
    lean_arrow()
from bench.snapshot import build
def rss(): return int(open(f"/proc/{{os.getpid()}}/statm").read().split()[1]) * 4096 / 1e6
state = build(100_000)
before = rss()
for _ in range(3):
    state.snapshot()
    release_free_memory()
print(rss() - before)
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return float(result.stdout)


def test_a_lean_process_keeps_less_after_snapshots():
    """Three snapshots of a 100k fleet: measured +28-37 MB resident lean, +95-98 MB with
    Arrow's defaults (pandas imported, mimalloc keeping its pages)."""
    lean, default = _growth_over_snapshots(True), _growth_over_snapshots(False)
    assert lean < default - 30, f"lean +{lean:.0f} MB, default +{default:.0f} MB"


RESTART = """
import json, sys
from controlplane.process_memory import lean_arrow
lean_arrow()
import controlplane.standalone.process  # what a node imports before it restores
from controlplane.raft.messages import Entry
from controlplane.state.fleet import FleetState
state = FleetState()
state.restore(open(sys.argv[1], "rb").read())
for i, command in enumerate([
    {"type": "register_uav", "uav": "late", "home_station": "station-0"},
    {"type": "update_uav", "uav": "late", "battery": 50},
    {"type": "create_mission", "mission": "late", "waypoints": [{"lat": 1, "lon": 1, "alt": 10}]},
]):
    assert state.apply(Entry(1, state.applied_index + 1 + i, json.dumps(command).encode()))["ok"]
print(sorted(m for m in ("pyarrow.compute", "pyarrow.parquet", "pandas") if m in sys.modules))
"""


def test_a_restart_restores_and_replays_without_importing_arrow_compute_or_parquet(tmp_path):
    """pyarrow.compute costs ~85 ms of a process's start, pyarrow.parquet ~30-75 ms; a
    restarting replica needs the one only once it writes a snapshot or applies telemetry, the
    other once it flushes its RPC statistics."""
    snapshot = tmp_path / "snapshot"
    write = f"from bench.snapshot import build; open({str(snapshot)!r}, 'wb').write(build(50).snapshot())"
    made = subprocess.run([sys.executable, "-c", write], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    result = subprocess.run(
        [sys.executable, "-c", RESTART, str(snapshot)], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_started_process_keeps_what_it_holds_out_of_full_collections():
    """freeze_started_process: the objects of the imports and of the state held then are no
    longer walked by a full collection (each walk of a started Ray replica's ~95,000 took
    85-106 ms on this machine), and one of them is still freed when its last reference goes."""
    probe = """
import gc, weakref
from controlplane.process_memory import freeze_started_process
from bench.snapshot import build
state = build(2_000)
class Held: pass
held = Held()
dropped = weakref.ref(held)
walked_before = len(gc.get_objects())
frozen = freeze_started_process()
walked_after = len(gc.get_objects())
del held
print(walked_before, frozen, walked_after, dropped() is None)
"""
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    walked_before, frozen, walked_after, freed = result.stdout.split()
    assert int(frozen) >= int(walked_before) > 10_000
    assert int(walked_after) < 100
    assert freed == "True"
