"""Every job through the real `ray job submit`, against a real `ray start --head` on
127.0.0.1 with token authentication on (RAY_AUTH_MODE=token, the cluster's token passed
to the CLI as RAY_AUTH_TOKEN, as the README documents)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def processes_using(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
    return [p for p in pids if p != os.getpid()]


@pytest.fixture(scope="module")
def head():
    """A head node of our own: its own temp dir and ports, stopped by killing exactly its
    processes (`ray stop` would kill every Ray process of this user)."""
    temp = tempfile.mkdtemp(prefix="rayjobs-", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = dict(
        os.environ,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
    )
    dashboard = free_port()
    start = [
        RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
        "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard}", "--include-dashboard=true",
        "--num-cpus=2", '--resources={"station:alpha":1,"station:bravo":1,"station:charlie":1}',
        f"--temp-dir={temp}", "--disable-usage-stats",
        # Ray's fixed default ports (agent 52365, ...) would collide with any other Ray here.
        f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}", f"--metrics-export-port={free_port()}",
        f"--ray-client-server-port={free_port()}",
    ]  # fmt: skip
    proc = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    try:
        yield {"env": env, "address": f"http://127.0.0.1:{dashboard}", "data": temp + "/data"}
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in processes_using(temp):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while processes_using(temp) and time.monotonic() < deadline:
                time.sleep(0.2)


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
    assert (replay["accepted"], replay["registered"], replay["rejected_on_apply"]) == (600, 60, 0)

    chaos = submit(head, "jobs.chaos", "--group", "e2e", "--rounds", "2", "--interval", "1.5")
    assert chaos["acknowledged"] > 0 and chaos["missing"] == [] and chaos["digests_equal"]
    assert [f["fault"] for f in chaos["faults"]] == ["leader", "follower"]

    stats = submit(head, "jobs.export_stats", "--group", "e2e", "--out", str(tmp_path / "stats"))
    assert stats["rows"] > 0 and stats["replicas"] == ["1", "2", "3"]
