"""The `controlplane` command against a real cluster: tables, --json, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from tests.e2e.conftest import ROOT


def cli(head, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "controlplane", "--group", "cli", "--address", head["gcs"], *args]
    proc = subprocess.run(cmd, env=head["env"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == code, f"{args}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


def as_json(head, *args: str, code: int = 0):
    return json.loads(cli(head, "--json", *args, code=code).stdout)


def test_cli_status_missions_uavs_groups_stats(head, tmp_path):
    deploy = [
        sys.executable,
        "-m",
        "jobs.deploy",
        "--group",
        "cli",
        "--address",
        head["gcs"],
        "--data-root",
        head["data"],
    ]
    proc = subprocess.run(deploy, env=head["env"], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]

    # Each command is its own process attaching to Ray (seconds each): the independent
    # sequences run side by side.
    def status() -> None:
        shown = as_json(head, "status")
        replicas = shown["replicas"]
        assert sorted(r["replica"] for r in replicas) == [1, 2, 3] and sum(r["role"] == "leader" for r in replicas) == 1
        controller = shown["controller"]  # jobs.deploy started it; it stored the map in the group
        assert controller["placement"] == {"1": "alpha", "2": "bravo", "3": "charlie"}
        assert [(s["station"], s["healthy"]) for s in controller["stations"]] == [
            ("alpha", True), ("bravo", True), ("charlie", True)
        ]  # fmt: skip
        table = cli(head, "status").stdout  # tables for people
        assert "REPLICA" in table and "placement map (version" in table and "charlie" in table

    def missions() -> None:
        missions = tmp_path / "missions.json"
        missions.write_text(
            json.dumps([{"mission": "m1", "waypoints": [[47, 8, 30]]}, {"mission": "m2", "waypoints": []}])
        )
        result = as_json(head, "missions", "submit", str(missions), code=1)  # one row is bad
        assert result["created"] == 1 and result["invalid"][0]["line"] == 1  # both on line 1 of a one-line file
        assert [m["id"] for m in as_json(head, "missions", "list")] == ["m1"]
        assert as_json(head, "missions", "list", "--status", "pending")[0]["status"] == "pending"
        assert as_json(head, "--stale", "missions", "get", "m1")["id"] == "m1"
        assert as_json(head, "missions", "abort", "m1")["ok"]
        again = cli(head, "missions", "abort", "m1", code=1)
        assert "cannot become aborted" in again.stderr

    def uavs() -> None:
        assert "no UAV 'nope'" in cli(head, "uav", "get", "nope", code=1).stderr
        assert as_json(head, "uav", "list", "--bbox", "40,0,50,10") == []
        cli(head, "uav", "list", "--bbox", "north", code=1)

    def groups() -> None:
        assert as_json(head, "groups", "create", "g")["ok"]
        cli(head, "groups", "add", "g", "ghost", code=1)
        assert as_json(head, "groups", "list") == [{"id": "g", "members": [], "version": 1}]

    with ThreadPoolExecutor(max_workers=3) as pool:
        for done in [pool.submit(f) for f in (missions, groups, uavs, status)]:
            done.result()  # a failed sequence's assertion, raised here

    exported = as_json(head, "stats", "export", "--out", str(tmp_path / "stats"))  # the traffic above included
    assert exported["rows"] > 0 and not exported["failed"]

    missing = subprocess.run(
        [sys.executable, "-m", "controlplane", "--group", "nosuch", "--address", head["gcs"], "status"],
        env=head["env"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert missing.returncode == 3 and "deploy it" in missing.stderr
