"""Three etcd members on 127.0.0.1 (random ports, data in one directory), default settings
(fsync on every commit) unless timing is given: the peer bench/failover.py and
bench/compare.py measure against."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

from bench.ports import free_port


class EtcdCluster:
    def __init__(self, root: str, timing: tuple[int, int] | None = None) -> None:
        """timing: (--heartbeat-interval, --election-timeout) in ms; None: etcd's defaults
        (100, 1000)."""
        self.root = root
        self.timing = timing
        self.members = {f"m{i}": (free_port(), free_port()) for i in range(1, 4)}  # client, peer
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.initial = ",".join(f"{n}=http://127.0.0.1:{peer}" for n, (_, peer) in self.members.items())

    def start(self, name: str, state: str = "new") -> None:
        client, peer = self.members[name]
        self.procs[name] = subprocess.Popen(
            [
                "etcd", "--name", name, "--data-dir", f"{self.root}/{name}",
                "--listen-client-urls", f"http://127.0.0.1:{client}",
                "--advertise-client-urls", f"http://127.0.0.1:{client}",
                "--listen-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
                "--initial-cluster", self.initial, "--initial-cluster-state", state,
                "--initial-cluster-token", "uav-bench",
                *([] if self.timing is None else
                  ["--heartbeat-interval", str(self.timing[0]), "--election-timeout", str(self.timing[1])]),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def start_all(self) -> None:
        for name in self.members:
            self.start(name)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.members[name][0]}"

    def wait_leader(self, timeout: float = 30.0) -> str:
        """The member that leads, once every member answers and agrees on it (blocking)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = {name: self._status(name) for name in self.members}
            leaders = {s["leader"] if s else None for s in statuses.values()}
            if len(leaders) == 1 and None not in leaders:
                return next(n for n, s in statuses.items() if s and s["header"]["member_id"] == s["leader"])
            time.sleep(0.05)
        raise TimeoutError(f"etcd elected no leader within {timeout}s")

    def _status(self, name: str) -> dict[str, Any] | None:
        try:
            request = urllib.request.Request(self.url(name) + "/v3/maintenance/status", data=b"{}")
            with urllib.request.urlopen(request, timeout=1) as answer:
                status: dict[str, Any] = json.load(answer)
        except (urllib.error.URLError, OSError, ValueError):
            return None
        return status if "leader" in status else None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
