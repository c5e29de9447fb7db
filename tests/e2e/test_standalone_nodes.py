"""Three `python -m controlplane node` processes, each on its own loopback address and
configured only by environment variables, as the specification's integration section runs
them: no Ray anywhere."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from bench.standalone_nodes import CLUSTER_TOKEN, ROOT, NodeProcesses
from controlplane.node_client import NodeGroup


@pytest.fixture(scope="module", params=["static", "etcd"])
def nodes(request, tmp_path_factory):
    """The same group found through PEER_NODES alone, and again through a real etcd."""
    discovery = _etcd_env() if request.param == "etcd" else None
    group = NodeProcesses(tmp_path_factory.mktemp(f"standalone-{request.param}"), 3, discovery=discovery)
    try:
        for name in group.founders:
            group.start(name)
        group.wait_for_group()
        group.sdk(lambda g: g.command({"type": "register_station", "station": "s1"}))
        yield group
    finally:
        group.stop_all()


def _register(nodes: NodeProcesses, via: str, uav: str) -> tuple[int, object]:
    return nodes.api(via, "POST", "/v1/uavs", {"uav": uav, "home_station": "s1"})


def test_writes_through_any_node_are_read_back_from_every_other(nodes):
    for name in nodes.founders:
        status, answer = _register(nodes, name, f"uav-{name}")
        assert status == 201, answer
    for reader in nodes.founders:
        for writer in nodes.founders:
            status, uav = nodes.api(reader, "GET", f"/v1/uavs/uav-{writer}")  # linearizable by default
            assert status == 200 and uav["home_station"] == "s1", (reader, writer, uav)
    status, answer = nodes.api(nodes.founders[0], "GET", "/v1/status")
    assert status == 200 and answer["leader"] in (1, 2, 3)
    assert sorted(r["name"] for r in answer["replicas"]) == sorted(nodes.founders)


def test_telemetry_through_a_follower_is_applied_everywhere(nodes):
    leader = nodes.wait_for("a leader", nodes.leader)
    follower = next(n for n in nodes.founders if n != leader)
    assert _register(nodes, follower, "uav-t")[0] == 201
    report = {"reports": [{"uav": "uav-t", "lat": 47.5, "lon": 8.5, "time": 10.0, "seq": 1}]}
    status, answer = nodes.api(follower, "POST", "/v1/stations/s1/telemetry", report)
    assert status == 200 and answer["applied"]["written"] == 1, answer
    for name in nodes.founders:
        assert nodes.api(name, "GET", "/v1/uavs/uav-t")[1]["lat"] == 47.5


def test_peer_calls_without_the_cluster_token_are_refused(nodes):
    name = nodes.founders[0]
    before = nodes.status(name)
    for path, body in (("/raft/v1/messages", b"\x00" * 16), ("/client/v1/stream", None)):
        request = urllib.request.Request(nodes.peer_url(name) + path, data=body, method="POST" if body else "GET")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 401
    after = nodes.status(name)
    assert before is not None and after is not None and after["term"] == before["term"]


def test_the_api_requires_its_token(nodes):
    request = urllib.request.Request(nodes.api_url(nodes.founders[0]) + "/v1/uavs")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 401


def test_a_killed_leader_is_replaced_and_restarts_from_its_data_dir(nodes):
    leader = nodes.wait_for("a leader", nodes.leader)
    survivors = [n for n in nodes.founders if n != leader]
    assert nodes.kill(leader) == -signal.SIGKILL
    killed_at = time.monotonic()
    status, answer = _register(nodes, survivors[0], "uav-after-failover")  # waits out the election
    gap = time.monotonic() - killed_at
    assert status == 201, answer
    print(f"write served {gap:.2f}s after the leader was killed")
    assert gap < 5.0  # the election timeout is 0.5-1 s; the target (2 s) is measured, not timed here
    nodes.start(leader)
    # Back from its disk: it has the writes from before, and catches up on the one it missed.
    status, uav = nodes.wait_for(
        "the restarted node to serve the write it missed",
        lambda: (lambda r: r if r[0] == 200 else None)(nodes.api(leader, "GET", "/v1/uavs/uav-after-failover")),
    )
    assert uav["home_station"] == "s1"
    recovered = nodes.status(leader)
    assert recovered is not None and recovered["voters"] == [1, 2, 3]
    assert "rpc-stats" in {p.name for p in nodes.data_dir(leader).iterdir()}


def test_sigterm_hands_leadership_over_before_exiting(nodes):
    leader = nodes.wait_for("a leader", nodes.leader)
    others = [n for n in nodes.founders if n != leader]
    nodes.wait_for("every node back", lambda: all(nodes.status(n) for n in nodes.founders))
    term_before = nodes.status(leader)["term"]  # type: ignore[index]
    assert nodes.kill(leader, signal.SIGTERM) == 0, nodes.log(leader)
    new = nodes.wait_for("a new leader", lambda: nodes.leader(others), timeout=5.0)
    # A handoff (TimeoutNow) is one term up; an election after a timeout could be more.
    assert nodes.status(new)["term"] == term_before + 1  # type: ignore[index]
    nodes.start(leader)
    nodes.wait_for("the node back", lambda: nodes.status(leader))


def test_a_founder_back_without_its_data_dir_refuses_to_rejoin(nodes):
    name = next(n for n in nodes.founders if n != nodes.leader())
    nodes.kill(name)
    moved = nodes.data_dir(name).with_suffix(".lost")
    nodes.data_dir(name).rename(moved)
    try:
        proc = nodes.start(name)
        assert proc.wait(timeout=60) == 3
        nodes.procs.pop(name)
        assert "holds no Raft state" in nodes.log(name) and "NODE_JOIN" in nodes.log(name)
    finally:
        import shutil

        shutil.rmtree(nodes.data_dir(name), ignore_errors=True)
        moved.rename(nodes.data_dir(name))
    nodes.start(name)
    nodes.wait_for("the node back on its own data", lambda: nodes.status(name))


def test_the_sdk_reaches_the_group_by_address(nodes):
    async def use(sdk: NodeGroup):
        answer = await sdk.command({"type": "register_uav", "uav": "uav-sdk", "home_station": "s1"})
        assert answer["ok"], answer
        again = await sdk.command({"type": "register_uav", "uav": "uav-sdk", "home_station": "s1"})
        assert not again["ok"] and again.get("conflict"), again  # the second is refused: it exists
        uav = await sdk.query("uav", {"id": "uav-sdk"})
        statuses = await sdk.status()
        return uav, statuses

    uav, statuses = nodes.sdk(use)
    assert uav["id"] == "uav-sdk"
    assert {s.get("name") for s in statuses} >= set(nodes.founders) - {None}


def _etcd_env() -> dict[str, str]:
    host, port = os.environ.get("ETCD_HOST", "127.0.0.1"), os.environ.get("ETCD_PORT", "23790")
    try:
        urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1).close()
    except OSError:
        if os.environ.get("CI"):
            pytest.fail(f"etcd is not running on {host}:{port}; scripts/test.sh starts it")
        pytest.skip(f"SKIPPED LOUDLY: no etcd on {host}:{port} (run scripts/test.sh)")
    return {
        "DISCOVERY_TYPE": "etcd",
        "ETCD_HOST": host,
        "ETCD_PORT": port,
        "DISCOVERY_SERVICE": f"raft-node-{uuid.uuid4().hex[:8]}",  # this test's group only
        "REGISTRATION_TTL": "3",
    }


def _members(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "controlplane", "members", "--json", *args],
        env={**os.environ, **env, "CLUSTER_TOKEN": CLUSTER_TOKEN}, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.etcd
def test_with_etcd_a_fourth_node_joins_through_discovery_and_a_node_is_removed(tmp_path):
    discovery = _etcd_env()
    group = NodeProcesses(tmp_path, 3, discovery=discovery)
    try:
        for name in group.founders:
            group.start(name)
        group.wait_for_group()
        listed = _members(discovery, "list")
        assert listed.returncode == 0, listed.stderr
        assert sorted(s["name"] for s in json.loads(listed.stdout)) == group.founders  # found through etcd

        group.define("node_4")
        group.start("node_4", NODE_JOIN="1", PEER_NODES="")  # knows only etcd
        group.wait_for("node_4 to answer", lambda: group.status("node_4"))
        station = {"type": "register_station", "station": "s1"}
        assert group.sdk(lambda sdk: sdk.command(station), via=["node_1"])["ok"]
        added = _members(discovery, "add", "node_4")
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["voters"] == [1, 2, 3, 4]
        status, answer = group.api("node_4", "POST", "/v1/uavs", {"uav": "uav-4", "home_station": "s1"})
        assert status == 201, answer
        for name in group.founders:
            assert group.api(name, "GET", "/v1/uavs/uav-4")[0] == 200

        removed = _members(discovery, "remove", "node_1")
        assert removed.returncode == 0, removed.stderr
        assert json.loads(removed.stdout)["voters"] == [2, 3, 4]
        group.kill("node_1")
        status, answer = group.api("node_2", "POST", "/v1/uavs", {"uav": "uav-5", "home_station": "s1"})
        assert status == 201, answer  # the three remaining voters carry on without it
    finally:
        group.stop_all()


def test_the_controlplane_command_drives_standalone_nodes_without_ray(nodes, tmp_path):
    env = {**os.environ, "CLUSTER_TOKEN": CLUSTER_TOKEN, "CONTROLPLANE_NODES": nodes.peer_url(nodes.founders[1])}
    missions = tmp_path / "missions.json"
    missions.write_text(json.dumps([{"id": "m-cli", "waypoints": [{"lat": 1.0, "lon": 2.0, "alt": 3.0}]}]))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "controlplane", "--json", *args],
            env=env, cwd=ROOT, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    status = run("status")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert sorted(r["name"] for r in shown["replicas"]) == sorted(nodes.founders)
    assert shown["controller"] is None  # standalone nodes have no Ray controller
    submitted = run("missions", "submit", str(missions))
    assert submitted.returncode == 0, submitted.stderr + submitted.stdout
    assert json.loads(submitted.stdout)["created"] == 1
    got = run("missions", "get", "m-cli")
    assert got.returncode == 0 and json.loads(got.stdout)["id"] == "m-cli"
    missing = run("uav", "get", "no-such-uav")
    assert missing.returncode == 1 and "no-such-uav" in missing.stdout
    no_token = subprocess.run(
        [sys.executable, "-m", "controlplane", "--nodes", nodes.peer_url(nodes.founders[0]), "status"],
        env={k: v for k, v in env.items() if k != "CLUSTER_TOKEN"}, cwd=ROOT, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert no_token.returncode != 0 and "cluster token" in no_token.stderr


def _scrape(nodes: NodeProcesses, name: str) -> dict[str, float]:
    """The node's /metrics (no token needed), summed over label sets per metric name."""
    with urllib.request.urlopen(nodes.api_url(name) + "/metrics", timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            metric, value = line.rsplit(" ", 1)
            name_only = metric.split("{", 1)[0]
            totals[name_only] = totals.get(name_only, 0.0) + float(value)
    return totals


def test_each_node_serves_prometheus_metrics_that_move_under_load(nodes):
    leader = nodes.wait_for("a leader", nodes.leader)
    before = nodes.wait_for("a first sample", lambda: (m := _scrape(nodes, leader)).get("controlplane_raft_term") and m)
    assert before["controlplane_raft_is_leader"] == 1

    def totals() -> dict[str, float]:
        """Summed over the nodes: a count lands where the work was done, the leader unless
        leadership moved meanwhile (an earlier test kills and stops leaders)."""
        summed: dict[str, float] = {}
        for name in nodes.founders:
            for metric, value in _scrape(nodes, name).items():
                summed[metric] = summed.get(metric, 0.0) + value
        return summed

    was = totals()
    for i in range(20):
        assert _register(nodes, leader, f"uav-metrics-{i}")[0] == 201
    now = nodes.wait_for(
        "the proposals to be counted",
        lambda: (
            (t := totals()).get("controlplane_proposals_total", 0) >= was.get("controlplane_proposals_total", 0) + 20
            and t
        ),
    )
    for metric in ("controlplane_raft_commit_index", "controlplane_rpc_attempts_total",
                   "controlplane_wal_fsync_seconds_count"):  # fmt: skip
        assert now[metric] > was.get(metric, 0), metric
    assert (
        now["controlplane_proposal_round_seconds_count"] >= was.get("controlplane_proposal_round_seconds_count", 0) + 1
    )
    assert (
        _scrape(nodes, leader)["controlplane_api_requests_total"]
        >= before.get("controlplane_api_requests_total", 0) + 20
    )


def test_a_founder_slower_to_its_first_start_than_the_others_election_joins(tmp_path):
    """Its directory is empty as a lost disk's would be, but no peer has had a message from
    it: it bootstraps and catches up instead of refusing as a founder back without its data;
    while a peer that might have does not answer, it refuses."""
    late = NodeProcesses(tmp_path, 3)
    try:
        early = [n for n in late.founders if n != "node_2"]
        for name in early:
            late.start(name)
        leader = late.wait_for("a leader of two", lambda: late.leader(early))
        late.sdk(lambda g: g.command({"type": "register_station", "station": "s1"}), via=early)
        assert late.status(leader)["term"] > 1  # the group has run  # type: ignore[index]
        silent = next(n for n in early if n != leader)
        late.kill(silent)
        assert late.start("node_2").wait(timeout=60) == 3
        late.procs.pop("node_2")
        assert f"{silent} did not answer" in late.log("node_2"), late.log("node_2")
        late.start(silent)
        late.start("node_2")
        caught_up = late.wait_for(
            "node_2 caught up",
            lambda: (s := late.status("node_2")) is not None and s["applied"] >= late.status(leader)["commit"] and s,  # type: ignore[index]
        )
        assert caught_up["voters"] == [1, 2, 3]
        status, station = late.api("node_2", "GET", "/v1/stations")
        assert status == 200 and "s1" in json.dumps(station), station
    finally:
        late.stop_all()
