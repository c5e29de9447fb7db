"""bench.stats_overhead --w2: the statistics' share of W2 on Ray replicas, with and without."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_w2_share_runs_both_sides_and_names_its_measure():
    done = subprocess.run(
        [sys.executable, "-m", "bench.stats_overhead", "--w2", "--rounds", "1", "--seconds", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for side in ("on", "off"):
        (run,) = report["rounds"][side]
        assert run["writes_per_s"] > 0 and run["replica_cpu_us_per_write"] > 0 and run["attempts_per_write"] > 0
    assert report["share"] == pytest.approx(
        report["stats_us_per_write"] / report["median"]["on"]["replica_cpu_us_per_write"], abs=1e-4
    )
    assert report["met"] == (report["share"] <= report["goal"] == 0.03)
