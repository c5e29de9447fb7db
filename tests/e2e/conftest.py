"""One real head node (`ray start --head` on 127.0.0.1, token auth on) for the e2e tests."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.node_cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
RAY = str(Path(sys.executable).parent / "ray")


def need_station_namespaces(missing: str | None = None) -> None:
    """Station namespaces (bench/netns.py) need root: skip loudly without them, and fail in CI
    (which runs as root, so there they must work). `missing`: what else this test lacks."""
    from bench.netns import available

    why = available() or missing
    if why is not None:
        if os.environ.get("CI"):
            pytest.fail(f"station namespaces are needed here (CI runs as root): {why}")
        pytest.skip(f"SKIPPED LOUDLY: {why}")


def processes_using(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
    return [p for p in pids if p != os.getpid()]


@pytest.fixture(scope="session")
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
        # Job entrypoints say `python`: the head must find this venv's first (as cluster.yaml's
        # stations do by activating it), whether or not the test run activated it.
        PATH=f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    )
    dashboard, gcs = free_port(), free_port()
    start = [
        RAY, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={gcs}",
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
        yield {
            "env": env,
            "address": f"http://127.0.0.1:{dashboard}",
            "gcs": f"127.0.0.1:{gcs}",
            "data": temp + "/data",
        }
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in processes_using(temp):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while processes_using(temp) and time.monotonic() < deadline:
                time.sleep(0.2)
