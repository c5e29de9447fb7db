"""Ray across station hosts (bench/netns.py): a head in one namespace and a worker node per
station namespace, each `ray start --node-ip-address <its own address>` with the resource
`station:<name>`, as scripts/station_ray.sh starts real stations (health checks every second,
so a lost station is noticed in ~3 s).

    ray = RayOnHosts(hosts, stations={2: "s1", 3: "s2"}, head=1)   # head without a station
    ray.start()
    ray.run(1, [sys.executable, "-m", "jobs.deploy", "--address", ray.address, ...])
    hosts.kill_all(3); ray.start_node(3)                             # station s2 lost, back
"""

from __future__ import annotations

import itertools
import os
import secrets
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.netns import StationHosts

RAY = str(Path(sys.executable).parent / "ray")
ROOT = Path(__file__).resolve().parents[1]
HEAD_PORT = 6390  # inside the head's namespace: no other Ray shares its ports
HEALTH_CHECKS = '{"health_check_period_ms": 1000, "health_check_failure_threshold": 3}'


class RayOnHosts:
    def __init__(self, hosts: StationHosts, stations: Mapping[int, str], head: int = 1, token: str | None = None):
        """stations: namespace index -> station name; `head` may be one of them or not."""
        self.hosts = hosts
        self.stations = dict(stations)
        self.head = head
        self.address = f"{hosts.address(head)}:{HEAD_PORT}"
        # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER forbids joining a head: not set on station hosts.
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
        self.env.update(
            RAY_USAGE_STATS_ENABLED="0",
            RAY_AUTH_MODE="token",
            RAY_AUTH_TOKEN=token or os.environ.get("RAY_AUTH_TOKEN") or secrets.token_hex(32),
            PYTHONPATH=str(ROOT),
        )
        self._starts = itertools.count(1)

    def start(self) -> RayOnHosts:
        self.start_node(self.head)
        for i in sorted(self.stations):
            if i != self.head:
                self.start_node(i)
        return self

    def start_node(self, i: int) -> None:
        """Start (or, after the host was lost, start again) Ray in namespace i."""
        station = self.stations.get(i)
        argv = [RAY, "start", f"--node-ip-address={self.hosts.address(i)}", "--num-cpus=1", "--disable-usage-stats",
                # a fresh temp dir each time: a lost node's files stay behind
                f"--temp-dir=/tmp/rayst{i}-{self.hosts.tag}-{next(self._starts)}"]  # fmt: skip
        if i == self.head:
            argv += ["--head", f"--port={HEAD_PORT}", "--include-dashboard=false", f"--system-config={HEALTH_CHECKS}"]
        else:
            argv.append(f"--address={self.address}")
        if station is not None:
            argv.append(f'--resources={{"station:{station}": 1}}')
        started = self.run(i, argv, timeout=180)
        if started.returncode != 0:
            raise RuntimeError(f"ray start in {self.hosts.namespace(i)} failed: {started.stderr[-2000:]}")

    def run(self, i: int, argv: list[str], timeout: float = 300, **options: Any) -> subprocess.CompletedProcess[str]:
        """Run a command in namespace i with the cluster's environment (output captured
        unless `stdout`/`stderr` say otherwise)."""
        streams = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, **options}
        return subprocess.run(
            self.hosts.command(i, argv), env=self.env, cwd=ROOT, text=True, timeout=timeout, **streams
        )

    def stop(self) -> None:
        """Every station host is lost with everything on it (Ray's own processes included)."""
        for i in range(1, self.hosts.count + 1):
            self.hosts.kill_all(i)
