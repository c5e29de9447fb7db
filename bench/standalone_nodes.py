"""Standalone nodes (`python -m controlplane node`) as real processes for tests, each on its
own loopback address (127.0.0.<n>), configured only by the specification's variables."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from bench.netns import StationHosts
from bench.ports import free_port

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_TOKEN = "test-cluster-token-0123456789"
API_TOKEN = "test-api-token-0123456789"


class NodeProcesses:
    def __init__(
        self, base: Path, count: int, *, discovery: dict[str, str] | None = None, hosts: StationHosts | None = None
    ) -> None:
        """Nodes on 127.0.0.<n>, or with `hosts` each in its own station namespace (node_i on
        station i, at that station's address)."""
        self.base = base
        self.discovery = discovery or {}
        self.hosts = hosts
        self.nodes: dict[str, dict[str, Any]] = {}
        for i in range(1, count + 1):
            self.define(f"node_{i}")
        self.founders = list(self.nodes)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def define(self, name: str) -> dict[str, Any]:
        n = len(self.nodes) + 1
        if self.hosts is not None:  # a namespace of its own: any port is free there
            address, port, api_port = self.hosts.address(n), 7000, 8080
        else:
            address, port, api_port = f"127.0.0.{n}", free_port(), free_port()
        self.nodes[name] = {"node_id": name, "address": address, "port": port, "api_port": api_port, "station": n}
        return self.nodes[name]

    def env(self, name: str, **extra: str) -> dict[str, str]:
        node = self.nodes[name]
        peers = [{k: self.nodes[f][k] for k in ("node_id", "address", "port")} for f in self.founders]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NODE_", "PEER_", "DISCOVERY_", "ETCD_"))}
        env.update(
            NODE_ID=name,
            NODE_ADDRESS=node["address"],
            NODE_PORT=str(node["port"]),
            API_PORT=str(node["api_port"]),
            PEER_NODES=json.dumps(peers),
            DATA_DIR=str(self.data_dir(name)),
            CLUSTER_TOKEN=CLUSTER_TOKEN,
            CONTROLPLANE_API_TOKEN=API_TOKEN,
            TICK_INTERVAL="0.05",
            LOG_LEVEL="WARNING",
        )
        env.update(self.discovery)
        env.update(extra)
        return env

    def data_dir(self, name: str) -> Path:
        return self.base / name

    def start(self, name: str, **extra: str) -> subprocess.Popen[bytes]:
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 (the process keeps it)
        argv = [sys.executable, "-m", "controlplane", "node"]
        if self.hosts is not None:
            argv = self.hosts.command(self.nodes[name]["station"], argv)
        proc = subprocess.Popen(argv, env=self.env(name, **extra), cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.base / f"{name}.log").read_text(errors="replace")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        proc = self.procs.pop(name)
        proc.send_signal(sig)
        return proc.wait(timeout=30)

    def stop_all(self) -> None:
        for name in list(self.procs):
            proc = self.procs.pop(name)
            proc.kill()
            proc.wait(timeout=30)

    def peer_url(self, name: str) -> str:
        node = self.nodes[name]
        return f"http://{node['address']}:{node['port']}"

    def api_url(self, name: str) -> str:
        node = self.nodes[name]
        return f"http://{node['address']}:{node['api_port']}"

    def api(self, name: str, method: str, path: str, body: Any = None, timeout: float = 20.0) -> tuple[int, Any]:
        """(HTTP status, JSON body); status 0 when the node does not accept connections."""
        request = urllib.request.Request(
            self.api_url(name) + path,
            data=None if body is None else json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")
        except (urllib.error.URLError, OSError) as exc:  # not listening (yet), or gone
            return 0, f"{type(exc).__name__}: {exc}"

    def sdk(self, call: Callable[[Any], Awaitable[Any]], *, via: list[str] | None = None) -> Any:
        """Run `call(NodeGroup)` to its end, reaching the group through `via` (default: every node)."""
        from controlplane.node_client import NodeGroup

        async def go() -> Any:
            group = NodeGroup([self.peer_url(n) for n in (via or list(self.nodes))], token=CLUSTER_TOKEN)
            try:
                return await call(group)
            finally:
                await group.close()

        return asyncio.run(go())

    def status(self, name: str) -> dict[str, Any] | None:
        """The node's own status from its peer port, None while it does not answer."""
        request = urllib.request.Request(
            self.peer_url(name) + "/client/v1/status", headers={"Authorization": f"Bearer {CLUSTER_TOKEN}"}
        )
        try:
            with urllib.request.urlopen(request, timeout=1.0) as resp:
                return dict(json.loads(resp.read()))
        except (OSError, ValueError):
            return None

    def wait_for(self, what: str, condition: Any, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{name} exited ({proc.returncode}) while waiting for {what}:\n{self.log(name)}"
                    )
            value = condition()
            if value:
                return value
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")

    def wait_for_group(self, timeout: float = 30.0) -> str:
        """A leader, and every started node serving its API: two founders may elect before
        the third has opened its ports. The leader's name."""
        leader: str = self.wait_for("a leader", self.leader, timeout)
        self.wait_for(
            "every node's API", lambda: all(self.api(n, "GET", "/healthz", timeout=1.0)[0] for n in self.procs), timeout
        )
        return leader

    def leader(self, among: list[str] | None = None) -> str | None:
        for name in among or list(self.procs):
            status = self.status(name)
            if status is not None and status["role"] == "leader":
                return name
        return None


@contextlib.contextmanager
def running_group(base: Path, count: int = 3, *, discovery: dict[str, str] | None = None) -> Iterator[NodeProcesses]:
    """`count` founders started and a leader elected; every process stopped on the way out."""
    nodes = NodeProcesses(base, count, discovery=discovery)
    try:
        for name in nodes.founders:
            nodes.start(name)
        nodes.wait_for_group()
        yield nodes
    finally:
        nodes.stop_all()
