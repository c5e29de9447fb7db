"""bench/apply.py: the state machine's CPU per write, with and without the change feed."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_a_small_run_applies_every_write_and_reports_both():
    out = subprocess.run(
        [sys.executable, "-m", "bench.apply", "--commands", "300", "--uavs", "20", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("with_change_feed", "state_machine_alone"):
        assert result[name]["commands"] == 300 and result[name]["cpu_us_per_command"] > 0
