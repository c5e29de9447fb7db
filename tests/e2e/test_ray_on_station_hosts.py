"""Ray across station hosts: the head in the first station's network namespace, a worker node
in each of the others (`ray start --address ... --node-ip-address <station address>`), and a
group deployed over three of the four with `python -m jobs.deploy` and its defaults: each
replica binds and advertises its station's own address and peers authenticate with the
group's secret (a peer request without it is refused, 401, and changes nothing). Then one
station host is lost with everything on it: the controller jobs.deploy started replaces its
member on the spare station within the grace period + 10 s, without an operator."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from bench.netns import StationHosts
from bench.netns_ray import ROOT, RayOnHosts
from tests.e2e.conftest import need_station_namespaces

STATIONS = 4
GRACE = 5.0


@pytest.fixture()
def ray_on_hosts():
    need_station_namespaces()
    with StationHosts(STATIONS) as hosts:
        ray = RayOnHosts(hosts, {i: f"s{i}" for i in range(1, STATIONS + 1)}, head=1)
        try:
            yield hosts, ray.start()
        finally:
            ray.stop()


def in_station(ray: RayOnHosts, i: int, *argv: str) -> subprocess.CompletedProcess[str]:
    run = ray.run(i, [sys.executable, *argv])
    assert run.returncode == 0, f"{argv}: exit {run.returncode}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def last_json(run: subprocess.CompletedProcess[str]) -> dict:
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_a_group_deployed_over_station_hosts_survives_the_loss_of_one(ray_on_hosts, tmp_path):
    hosts, ray = ray_on_hosts
    head = ray.address
    driver = str(ROOT / "tests" / "e2e" / "ray_station_driver.py")
    deployed = last_json(
        in_station(ray, 1, "-m", "jobs.deploy", "--group", "hosts", "--replicas", "3", "--address", head,
                   "--data-root", str(tmp_path), "--grace", str(GRACE))
    )  # fmt: skip
    assert deployed["placement"] == {"1": "s1", "2": "s2", "3": "s3"} and deployed["controller"]["started"]
    result = last_json(in_station(ray, 1, driver, "check", head))
    hosts_of = {r: a.split("//")[1].split(":")[0] for r, a in result["addresses"].items()}
    assert sorted(hosts_of.values()) == [hosts.address(1), hosts.address(2), hosts.address(3)]  # one per station
    assert sorted(result["roles"].values()) == ["follower", "follower", "leader"]
    assert set(result["counts"].values()) == {10}  # the writes replicated to every station
    assert result["unauthenticated"] == 401
    assert result["commit_after"] == result["commit_before"]  # the refused request changed nothing

    lost_at = time.time()
    hosts.kill_all(3)  # station s3's host is lost: Ray node, replica, everything
    after = last_json(in_station(ray, 1, driver, "replaced", head, str(lost_at)))
    move = after["move"]
    assert (move["old"], move["from"], move["to"], move["reason"]) == (3, "s3", "s4", "station_lost")
    assert after["seconds"] <= GRACE + 10, f"replaced {after['seconds']:.1f}s after the loss (grace {GRACE}s)"
    assert sorted(after["voters"]) == [1, 2, move["new"]] and after["write_after"]
    assert after["newcomer_uavs"] == 11  # the new member has every write, the one after the loss too
    assert after["newcomer_address"].split("//")[1].split(":")[0] == hosts.address(4)

    status = last_json(in_station(ray, 1, "-m", "controlplane", "--group", "hosts", "--address", head,
                                  "--json", "status"))  # fmt: skip
    health = {s["station"]: s["healthy"] for s in status["controller"]["stations"]}
    assert health == {"s1": True, "s2": True, "s3": False, "s4": True}
    assert status["controller"]["placement"] == {"1": "s1", "2": "s2", str(move["new"]): "s4"}
    shown = in_station(ray, 1, "-m", "controlplane", "--group", "hosts", "--address", head, "status").stdout
    print(shown)  # the operator's view, in the test log
    print(f"station s3 lost: member replaced on s4 after {after['seconds']:.1f}s (grace {GRACE}s; seen down "
          f"{move['down_for']:.1f}s when the move began, which took {move['took']:.1f}s)")  # fmt: skip
