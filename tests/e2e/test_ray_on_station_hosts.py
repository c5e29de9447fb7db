"""Ray across station hosts: the head in the first station's network namespace, a worker node
in each of the others (`ray start --address ... --node-ip-address <station address>`), and a
group deployed over them with the defaults: each replica binds and advertises its station's
own address and peers authenticate with the group's secret. A peer request without it is
refused (401) and changes nothing."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from bench.netns import StationHosts, available

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")
HEAD_PORT = 6390  # inside the first station's namespace: no other Ray shares its ports


@pytest.fixture()
def ray_on_hosts(tmp_path):
    why = available()
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"station namespaces are needed here (CI runs as root): {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why}")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}  # it forbids joining
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(32),
               PYTHONPATH=str(ROOT))  # fmt: skip
    with StationHosts(3) as hosts:
        head = f"{hosts.address(1)}:{HEAD_PORT}"
        try:
            for i in (1, 2, 3):
                where = (
                    ["--head", f"--port={HEAD_PORT}", "--include-dashboard=false"] if i == 1 else [f"--address={head}"]
                )
                started = subprocess.run(
                    hosts.command(i, [RAY, "start", *where, f"--node-ip-address={hosts.address(i)}", "--num-cpus=1",
                                      f'--resources={{"station:s{i}": 1}}', f"--temp-dir=/tmp/rayst{i}-{hosts.tag}",
                                      "--disable-usage-stats"]),
                    env=env, capture_output=True, text=True, timeout=180,
                )  # fmt: skip
                assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
            yield hosts, head, env
        finally:
            for i in (1, 2, 3):  # the station hosts are lost with everything on them
                hosts.kill_all(i)


def test_a_group_deployed_over_station_hosts_uses_their_addresses_and_its_secret(ray_on_hosts, tmp_path):
    hosts, head, env = ray_on_hosts
    run = subprocess.run(
        hosts.command(1, [sys.executable, str(ROOT / "tests" / "e2e" / "ray_station_driver.py"), head, str(tmp_path)]),
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    addresses = result["addresses"]
    hosts_of = {r: a.split("//")[1].split(":")[0] for r, a in addresses.items()}
    assert sorted(hosts_of.values()) == [hosts.address(1), hosts.address(2), hosts.address(3)]  # one per station
    assert sorted(result["roles"].values()) == ["follower", "follower", "leader"]
    assert set(result["counts"].values()) == {10}  # the writes replicated to every station
    assert result["unauthenticated"] == 401
    assert result["commit_after"] == result["commit_before"]  # the refused request changed nothing
