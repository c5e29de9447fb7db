"""bench/compare.py: the goal arithmetic, and a short real run against etcd (Python client)
and PySyncObj (both modes) that checks what the JSON line reports."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from bench.compare import goals, ratios
from tests.conftest import ROOT


def result(ops_per_s: float, p50: float) -> dict:
    return {"ops_per_s": ops_per_s, "p50_ms": p50, "p99_ms": p50 * 2}


def test_goals_compare_ours_against_the_peers_measured_in_the_same_run():
    table = {
        "W1": {"ours": result(100, 1.0), "etcd-go": result(1000, 1.0)},
        "W2": {
            "ours": result(5000, 5), "pysyncobj": result(1000, 5), "pysyncobj-nobatch": result(2500, 5),
            "etcd-go": result(2500, 5),
        },
        "W3": {"ours": result(4499, 5), "etcd-go": result(3000, 5)},
        "W4": {"ours": result(999_999, 50), "pysyncobj-nobatch": result(800_000, 20)},
    }  # fmt: skip
    reached = goals(table)
    assert reached["W1"]["met"] and reached["W1"]["value"] == 1.0  # at or below etcd's p50
    assert reached["W2"]["met"] and reached["W2"]["value"] == {"etcd-go": 2.0, "pysyncobj-nobatch": 2.0}
    assert not reached["W3"]["met"] and reached["W3"]["value"] == 1.5  # 1.4997: below 1.5x etcd
    assert not reached["W4"]["met"]
    table["W1"]["ours"] = result(100, 1.01)
    table["W2"]["ours"] = result(4999, 5)
    assert not goals(table)["W1"]["met"] and not goals(table)["W2"]["met"]


def test_goals_report_the_bounds_that_no_replication_change_can_pass():
    table = {
        "W1": {
            "ours": {**result(400, 2.0), "breakdown": {"linearizable_read_p50_ms": 1.0, "fdatasync_p50_ms": 0.2}},
            "etcd-go": result(1000, 0.8),
        },
        "W2": {
            "ours": {**result(5000, 5), "ceiling": {"ops_per_s": 9000}},
            "pysyncobj-nobatch": result(3000, 5), "etcd-go": result(6000, 5),
        },
    }  # fmt: skip
    reached = goals(table)
    assert reached["W1"]["read_round_and_fsync_vs_etcd_write"] == 1.5  # a 1 ms round + 0.2 ms disk against 0.8
    assert reached["W2"]["ceiling_vs_goal"] == 0.75  # 9,000/s at best against the 12,000 goal (2 x etcd)
    table["W2"]["pysyncobj-nobatch"] = result(9000, 5)
    assert goals(table)["W2"]["ceiling_vs_goal"] == 0.5  # the goal is 2 x the faster peer
    del table["W1"]["ours"]["breakdown"], table["W2"]["ours"]["ceiling"]
    assert (
        "read_round_and_fsync_vs_etcd_write" not in goals(table)["W1"] and "ceiling_vs_goal" not in goals(table)["W2"]
    )


def test_w4_is_met_only_within_its_latency_bound_and_above_pysyncobj():
    fast_but_late = {"ours": {**result(1_200_000, 600), "p99_ms": 1060}, "pysyncobj-nobatch": result(880_000, 20)}
    assert not goals({"W4": fast_but_late})["W4"]["met"]
    on_time = {"ours": {**result(1_000_000, 100), "p99_ms": 240}, "pysyncobj-nobatch": result(880_000, 20)}
    assert goals({"W4": on_time})["W4"]["met"]
    below_pysyncobj = {"ours": {**result(1_000_000, 100), "p99_ms": 240}, "pysyncobj-nobatch": result(1_100_000, 20)}
    assert not goals({"W4": below_pysyncobj})["W4"]["met"]


def test_the_best_telemetry_step_is_the_best_within_the_bound_or_none():
    from bench.telemetry import best_within

    steps = [
        {"updates_per_s": 100_000, "p99_ms": 40.0},
        {"updates_per_s": 300_000, "p99_ms": 240.0},
        {"updates_per_s": 800_000, "p99_ms": 900.0},
    ]
    assert best_within(steps, 250.0) == steps[1]
    assert best_within(steps[2:], 250.0) is None  # no step held the bound: none is called "best within" it
    assert ratios(result(50, 2), result(100, 1)) == {"ops_per_s": 0.5, "p50": 2.0}
    assert ratios(result(50, float("nan")), result(0, 1)) == {"ops_per_s": None, "p50": None}


@pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd-server is not installed (scripts/etcd.sh installs it)")
def test_a_short_run_reports_every_peer_and_workload_and_stops_what_it_started():
    before = subprocess.run(["pgrep", "-c", "-x", "etcd"], capture_output=True, text=True).stdout.strip() or "0"
    done = subprocess.run(
        [sys.executable, "-m", "bench.compare", "--systems", "etcd,pysyncobj", "--etcd-clients", "python",
         "--workloads", "W1,W2,W3", "--seconds", "1", "--clients", "8", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["bench"] == "compare" and report["clients"] == 8
    for w in ("W1", "W2"):
        for system in ("etcd-python", "pysyncobj", "pysyncobj-nobatch"):
            r = report[w][system]
            assert r["ops"] > 0 and r["errors"] == 0 and 0 < r["p50_ms"] <= r["p99_ms"], (w, system, r)
    assert report["W3"]["etcd-python"]["ops"] > 0
    assert "linearizable" in report["W3"]["pysyncobj"]["not_run"]
    assert report["W2"]["pysyncobj"]["p50_ms"] > 50  # its default mode sends appends every 100 ms
    assert "W4" not in report and report["goals"] == {}  # ours was not run: no goal is claimed
    after = subprocess.run(["pgrep", "-c", "-x", "etcd"], capture_output=True, text=True).stdout.strip() or "0"
    assert after == before
    assert subprocess.run(["pgrep", "-f", "bench.pysyncobj_node"], capture_output=True).returncode == 1


def test_pyspy_summary_counts_inclusive_and_self_samples():
    from bench.pyspy_summary import summarise

    total, inclusive, own = summarise("main;loop;apply 3\nmain;loop;send 1\nmain;idle 4\ngarbage\n")
    assert total == 8
    assert inclusive["main"] == 8 and inclusive["loop"] == 4
    assert own["apply"] == 3 and own["idle"] == 4 and "loop" not in own
