"""etcd's side of bench/compare.py: 3 members (bench/etcd_cluster.py, default fsync), driven
by a Python client (aetcd, gRPC asyncio) and by etcd's own Go client (bench/etcd_load, built
here from Debian's golang-etcd-server-dev). Both talk to the leader's endpoint, etcd's best
case. W3 reads are etcd's default ranges, which are linearizable (ReadIndex). W4 puts UAV
records in transactions of 128 puts, etcd's default --max-txn-ops."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bench.etcd_cluster import EtcdCluster
from bench.loadgen import closed_loop

GO_SOURCE = Path(__file__).parent / "etcd_load"
GO_PATH = "/usr/share/gocode"  # Debian's Go sources (golang-etcd-server-dev and its dependencies)
TXN_OPS = 128
WRITE_KEYS = 10_000
READ_KEYS = 1000


def build_go_client(cache: Path) -> Path:
    """The Go load generator, rebuilt when its source changed."""
    binary = cache / "etcd_load"
    source = GO_SOURCE / "main.go"
    if binary.exists() and binary.stat().st_mtime >= source.stat().st_mtime:
        return binary
    if shutil.which("go") is None or not Path(GO_PATH, "src/go.etcd.io/etcd/clientv3").is_dir():
        raise RuntimeError(
            "the native etcd client needs Go and etcd's Go sources: "
            "apt-get install -y golang-go golang-etcd-server-dev (scripts/bench_deps.sh does it), "
            "or pass --etcd-clients python"
        )
    cache.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GO_PATH, "GOCACHE": str(cache / "go-build")}
    build = subprocess.run(
        ["go", "build", "-o", str(binary), "."], cwd=GO_SOURCE, env=env, capture_output=True, text=True
    )
    if build.returncode != 0:
        raise RuntimeError(f"building bench/etcd_load failed:\n{build.stderr[-2000:]}")
    return binary


def run_go(binary: Path, endpoint: str, workload: str, clients: int, seconds: float) -> dict[str, Any]:
    args = [str(binary), "-endpoints", endpoint, "-workload", workload, "-clients", str(clients),
            "-seconds", str(seconds), "-batch", str(TXN_OPS), "-keys", str(WRITE_KEYS)]  # fmt: skip
    done = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60)
    if done.returncode != 0:
        raise RuntimeError(f"etcd_load {workload} failed: {done.stderr.strip()[-1000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in result.items()}


async def run_python(
    endpoint: str, workloads: list[str], clients: int, seconds: float, w4_clients: int
) -> dict[str, Any]:
    import aetcd

    host, port = endpoint.removeprefix("http://").rsplit(":", 1)
    value = b"v" * 100
    results: dict[str, Any] = {}
    async with aetcd.Client(host=host, port=int(port)) as client:

        def put(concurrency: int) -> Any:
            async def op(c: int, n: int) -> int:
                await client.put(f"uav-{(c + n * concurrency) % WRITE_KEYS:05d}".encode(), value)
                return 1

            return op

        async def get(c: int, n: int) -> int:
            await client.get(f"uav-{(c + n * clients) % READ_KEYS:05d}".encode())
            return 1

        async def txn(c: int, n: int) -> int:
            first = (c + n * w4_clients) * TXN_OPS
            puts = [
                client.transactions.put(f"uav-{(first + b) % WRITE_KEYS:05d}".encode(), value) for b in range(TXN_OPS)
            ]
            await client.transaction(compare=[], success=puts, failure=[])
            return TXN_OPS

        if "W1" in workloads:
            results["W1"] = await closed_loop(put(1), 1, seconds)
        if "W2" in workloads:
            results["W2"] = await closed_loop(put(clients), clients, seconds)
        if "W3" in workloads:
            for i in range(READ_KEYS):
                await client.put(f"uav-{i:05d}".encode(), value)
            results["W3"] = await closed_loop(get, clients, seconds)
        if "W4" in workloads:
            results["W4"] = await closed_loop(txn, w4_clients, seconds)
    return results


def run(
    workloads: list[str],
    clients: int,
    seconds: float,
    root: str,
    w4_clients: int,
    go_binary: Path | None,
    python_client: bool,
) -> dict[str, dict[str, Any]]:
    """{"python": {W: result}, "go": {W: result}} for the clients asked for; each client gets
    a fresh cluster (etcd slows as its log and database grow: a shared one favours the first)."""
    out: dict[str, dict[str, Any]] = {}
    plan = {"W1": ("put", 1), "W2": ("put", clients), "W3": ("get", clients), "W4": ("txn", w4_clients)}
    for client in ("python", "go"):
        if (client == "python" and not python_client) or (client == "go" and go_binary is None):
            continue
        cluster = EtcdCluster(f"{root}/{client}")
        cluster.start_all()
        try:
            endpoint = cluster.url(cluster.wait_leader())
            if client == "python":
                out["python"] = asyncio.run(run_python(endpoint, workloads, clients, seconds, w4_clients))
            else:
                assert go_binary is not None
                out["go"] = {w: run_go(go_binary, endpoint, *plan[w], seconds) for w in workloads}
        finally:
            cluster.stop_all()
    return out
