"""The simulator itself: deterministic, clean on a correct Raft, and able to find bugs."""

import json
import subprocess
import sys
from pathlib import Path

from controlplane.sim.runner import Job, run_many
from controlplane.sim.world import SimOptions, run_schedule

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEDULES = 500


def test_a_seed_replays_exactly():
    a = run_schedule(7, SimOptions(replicas=5))
    b = run_schedule(7, SimOptions(replicas=5))
    assert a.stats == b.stats and a.violations == b.violations
    assert a.stats != run_schedule(8, SimOptions(replicas=5)).stats


def test_schedules_exercise_the_faults_they_claim():
    jobs = [Job(seed, SimOptions(replicas=3 + 2 * (seed % 2))) for seed in range(40)]
    summary, _ = run_many(jobs, workers=2)
    t = summary.totals
    for key in ("crashes", "torn_writes", "partitions", "conf_changes", "transfers", "snapshots_installed"):
        assert t[key] > 0, key
    assert t["elections"] > len(jobs)
    assert summary.ops_ok > 0.8 * summary.ops


def test_many_schedules_are_safe_and_linearizable():
    jobs = [Job(seed, SimOptions(replicas=3 + 2 * (seed % 2))) for seed in range(1000, 1000 + DEFAULT_SCHEDULES)]
    summary, _ = run_many(jobs, workers=2)
    assert summary.schedules == DEFAULT_SCHEDULES
    assert summary.violations == 0, [f.replay for f in summary.failed]
    assert summary.linearizable
    assert summary.unconverged == 0


def test_a_disk_that_loses_fsynced_writes_is_caught():
    jobs = [Job(seed, SimOptions(replicas=3, lossy_disk=True)) for seed in range(150)]
    summary, _ = run_many(jobs, workers=2)
    assert summary.violations > 0
    failed = summary.failed[0]
    assert failed.replay == f"python -m controlplane.sim --seed {failed.seed} --replicas 3 --lossy-disk"


def test_cli_prints_one_json_line_and_exit_status_reflects_violations():
    def run(*args):
        return subprocess.run(
            [sys.executable, "-m", "controlplane.sim", "--json", "--quiet", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )

    ok = run("--seeds", "6", "--replicas", "3,5", "--jobs", "1")
    assert ok.returncode == 0, ok.stderr
    lines = ok.stdout.strip().splitlines()
    assert len(lines) == 1
    summary = json.loads(lines[0])
    assert summary["schedules"] == 6 and summary["violations"] == 0 and summary["linearizable"] is True
    assert summary["ops"] > 0

    bad = run("--seeds", "60", "--replicas", "3", "--lossy-disk")
    assert bad.returncode == 1
    out = json.loads(bad.stdout)
    assert out["violations"] > 0 and out["failed"][0]["replay"].startswith("python -m controlplane.sim --seed ")

    usage = run("--replicas", "three")
    assert usage.returncode == 2 and "--replicas takes comma-separated integers" in usage.stderr
