"""Run inside the first station's namespace by test_ray_on_station_hosts.py: deploy a group
over the three station hosts, write through the SDK, read each replica's own state, and try
a peer request without the cluster secret. Prints one JSON line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import urllib.error
import urllib.request

import ray

from controlplane.actors import deploy, find_leader
from controlplane.client import ControlPlane


async def main(address: str, data_root: str) -> dict:
    ray.init(address=address, namespace="uav-control-plane", logging_level=logging.ERROR, log_to_driver=False)
    handles = deploy("hosts", ["s1", "s2", "s3"], data_root)
    try:
        await find_leader(handles, 90)
        cp = ControlPlane("hosts", handles)
        await cp.command({"type": "register_station", "station": "s1"})
        for i in range(10):
            answer = await cp.command({"type": "register_uav", "uav": f"u{i}", "home_station": "s1"})
            assert answer["ok"], answer
        addresses = {r: await h.http_address.remote() for r, h in handles.items()}
        status = {s["replica"]: s for s in await cp.status()}
        deadline = asyncio.get_running_loop().time() + 30
        counts: dict[int, int] = {}
        while asyncio.get_running_loop().time() < deadline:  # every replica applied the writes
            counts = {r: len(await h.query.remote("uavs", None, "stale")) for r, h in handles.items()}
            if all(n == 10 for n in counts.values()):
                break
            await asyncio.sleep(0.2)
        before = {r: (await h.status.remote())["commit"] for r, h in handles.items()}
        try:
            request = urllib.request.Request(addresses[1] + "/raft/v1/messages", data=b"\x00" * 64, method="POST")
            urllib.request.urlopen(request, timeout=5)
            unauthenticated = 200
        except urllib.error.HTTPError as exc:
            unauthenticated = exc.code
        after = {r: (await h.status.remote())["commit"] for r, h in handles.items()}
        return {
            "addresses": addresses,
            "roles": {r: s["role"] for r, s in status.items()},
            "counts": counts,
            "unauthenticated": unauthenticated,
            "commit_before": before,
            "commit_after": after,
        }
    finally:
        for h in handles.values():
            ray.kill(h, no_restart=True)


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))), flush=True)
