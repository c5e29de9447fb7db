"""Every job through the real `ray job submit`, against a real `ray start --head` on
127.0.0.1 with token authentication on (RAY_AUTH_MODE=token, the cluster's token passed
to the CLI as RAY_AUTH_TOKEN, as the README documents)."""

from __future__ import annotations

import json
import subprocess
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tests.e2e.conftest import RAY, ROOT


def submit(head, *args: str, expect_ok: bool = True) -> dict:
    cmd = [RAY, "job", "submit", "--address", head["address"], "--working-dir", str(ROOT), "--", "python", "-m", *args]
    deadline = time.monotonic() + 60
    while True:
        proc = subprocess.run(cmd, env=head["env"], cwd=ROOT, capture_output=True, text=True, timeout=300)
        out = proc.stdout + proc.stderr
        # Right after `ray start` the head's job agent may not be up yet: Ray says so, try again.
        if "No available agent to submit job" not in out or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert (proc.returncode == 0) == expect_ok, out[-4000:]
    results = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert results, out[-4000:]
    return json.loads(results[-1])


def test_jobs_through_ray_job_submit(head, tmp_path):
    # Token auth is on: a client without the cluster's token (none in env, none in ~/.ray) is refused.
    stranger = {k: v for k, v in head["env"].items() if k != "RAY_AUTH_TOKEN"} | {"HOME": str(tmp_path)}
    refused = subprocess.run(
        [RAY, "job", "list", "--address", head["address"]], env=stranger, capture_output=True, text=True, timeout=120
    )
    assert refused.returncode != 0

    deployed = submit(head, "jobs.deploy", "--group", "e2e", "--data-root", head["data"], "--auto-register-uavs")
    assert deployed["action"] == "created" and len(deployed["replicas"]) == 3
    assert submit(head, "jobs.deploy", "--group", "e2e", "--data-root", head["data"])["action"] == "kept"

    missions = tmp_path / "missions.csv"
    missions.write_text("mission,waypoints,priority\nm1,47 8 30;47.1 8.1 40,2\nm2,47 north 30,1\nm3,46 8 30,\n")
    result = submit(head, "jobs.submit_missions", str(missions), "--group", "e2e", expect_ok=False)
    assert result["created"] == 2 and [b["line"] for b in result["invalid"]] == [3]

    n = 600
    reports = pa.table(
        {
            "uav": [f"r{i % 60}" for i in range(n)],
            "time": 1000 + np.arange(n) / 100.0,
            "seq": np.arange(n) // 60,
            "lat": np.full(n, 47.5),
            "lon": np.full(n, 8.5),
            "station": ["alpha", "bravo", "charlie"] * (n // 3),
        }
    )
    pq.write_table(reports, tmp_path / "reports.parquet")
    replay = submit(head, "jobs.telemetry_replay", str(tmp_path / "reports.parquet"), "--group", "e2e", "--speed", "20")
    # A batch whose answer was lost (a slow or changing leader) is sent again: its reports come
    # back as duplicates, or as stale when newer reports of the same UAVs went in meanwhile,
    # and the first answer's counts (its registrations too) never reach the job. Without a
    # resend the counts are exact.
    resent = replay["duplicate"] + replay["stale"]
    assert replay["accepted"] + resent == 600 and replay["rejected_on_apply"] == 0, replay
    if resent == 0:
        assert (replay["accepted"], replay["registered"]) == (600, 60), replay
    else:
        assert replay["registered"] + resent >= 60, replay

    chaos = submit(head, "jobs.chaos", "--group", "e2e", "--rounds", "2", "--interval", "1.5")
    assert chaos["acknowledged"] > 0 and chaos["missing"] == [] and chaos["digests_equal"]
    assert [f["fault"] for f in chaos["faults"]] == ["leader", "follower"]

    stats = submit(head, "jobs.export_stats", "--group", "e2e", "--out", str(tmp_path / "stats"))
    assert stats["rows"] > 0 and stats["replicas"] == ["1", "2", "3"]
