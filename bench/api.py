"""The HTTP API as ground-control software reaches it: 3 replicas on Ray (one per station),
`python -m controlplane.api` as its own process attached to that cluster, and closed-loop HTTP
clients updating UAVs (`PATCH /v1/uavs/{id}`, each answer checked). Reports requests/s,
latency and the API process's CPU per request (what the API itself costs, on top of the
replicas).

    python -m bench.api [--clients 32] [--seconds 6] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import aiohttp

from bench.loadgen import closed_loop
from bench.ports import free_port
from bench.processes import cpu_seconds

STATIONS = ["alpha", "bravo", "charlie"]
TOKEN = "bench-api-token-0123456789abcdef"


async def wait_until_serving(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API process exited ({proc.returncode}) before serving")
        try:
            async with session.get(url + "/healthz") as answer:
                if answer.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the API did not serve within 60 s")


async def run(clients: int, seconds: float) -> dict[str, Any]:
    import ray

    from controlplane.actors import deploy, find_leader
    from controlplane.client import ControlPlane

    group = f"benchapi{os.getpid()}"
    data_dir = tempfile.mkdtemp(prefix="bench-api-")
    replicas = deploy(group, STATIONS, data_dir)
    port = free_port()
    env = {**os.environ, "CONTROLPLANE_API_TOKEN": TOKEN}
    address = ray.get_runtime_context().gcs_address
    argv = [sys.executable, "-m", "controlplane.api", "--group", group, "--port", str(port), "--address", address]
    log = tempfile.TemporaryFile()  # noqa: SIM115 (the process writes it; read on failure)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=log)
    try:
        await find_leader(replicas, 60)
        sdk = ControlPlane(group, replicas)
        await sdk.command({"type": "register_station", "station": "alpha"})
        for c in range(clients):
            await sdk.command({"type": "register_uav", "uav": f"uav-{c:04d}", "home_station": "alpha"})
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as session:
            try:
                await wait_until_serving(session, url, proc)
            except RuntimeError as exc:
                log.seek(0)
                raise RuntimeError(f"{exc}; its stderr ends:\n{log.read()[-2000:].decode(errors='replace')}") from None

            async def update(c: int, n: int) -> int:
                state = {"lat": 47.0 + n % 1000 * 1e-5, "lon": 8.0, "alt": 100.0, "battery": 80.0}
                async with session.patch(f"{url}/v1/uavs/uav-{c:04d}", json=state) as answer:
                    body = await answer.read()
                    if answer.status != 200:
                        raise RuntimeError(f"{answer.status}: {body[:200]!r}")
                return 1

            await closed_loop(update, clients, 1.0)  # the API's connections and the leader stream warm
            started = cpu_seconds(proc.pid)
            result = await closed_loop(update, clients, seconds)
            result["api_cpu_us_per_request"] = round((cpu_seconds(proc.pid) - started) / max(result["ops"], 1) * 1e6, 1)
        return {"bench": "api", "clients": clients, "seconds": seconds, **result}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        for h in replicas.values():
            ray.kill(h, no_restart=True)
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=32)
    p.add_argument("--seconds", type=float, default=6.0)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.clients < 1 or args.seconds <= 0:
        p.error("--clients and --seconds must be positive")
    import ray

    ray.init(address="local", include_dashboard=False, resources={f"station:{s}": 1 for s in STATIONS},
             logging_level=logging.ERROR, log_to_driver=False)  # fmt: skip
    try:
        result = asyncio.run(run(args.clients, args.seconds))
    finally:
        ray.shutdown()
    print(json.dumps(result) if args.json else json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
