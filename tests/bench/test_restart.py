"""bench/restart.py runs end to end on a small fleet: three node processes loaded, a
follower and then the whole group restarted; its JSON names what it measured and judges
the goals from those numbers."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def test_a_small_run_reports_memory_and_restarts():
    out = subprocess.run(
        [sys.executable, "-m", "bench.restart", "--count", "300", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["uavs"] == 300 and set(result["holding"]) == {"node_1", "node_2", "node_3"}
    assert all(m["rss_mb"] > 50 for m in result["holding"].values())
    follower = result["follower_restart"]
    assert 0 < follower["answers_s"] <= follower["caught_up_s"]
    assert "recovered:" in follower["recovery"][0]
    goals = result["goals"]
    assert goals["rss_mb"]["met"] == (goals["rss_mb"]["worst"] <= 300)
    assert goals["restart_s"]["met"] == (max(follower["caught_up_s"], result["group_restart"]["read_s"]) <= 2.0)
