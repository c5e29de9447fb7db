"""Run inside the first station's namespace by test_ray_on_station_hosts.py. Prints one JSON
line.

    ray_station_driver.py check ADDRESS       the deployed group: its addresses, writes
                                               replicated to every station, a peer request
                                               without the cluster secret
    ray_station_driver.py replaced ADDRESS T  wait for the controller to replace the member of
                                               the station lost at time T; the group afterwards
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from typing import Any

import ray

from controlplane.actors import find_leader, group_replicas
from controlplane.client import ControlPlane
from controlplane.controller_actor import find_controller

GROUP = "hosts"


async def until(condition: Any, what: str, timeout: float) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            value = await condition()
        except (ray.exceptions.RayError, TimeoutError):
            value = None
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.2)


async def check() -> dict[str, Any]:
    handles = group_replicas(GROUP)
    await find_leader(handles, 90)
    cp = ControlPlane(GROUP, handles)
    for i in range(10):
        answer = await cp.command({"type": "register_uav", "uav": f"u{i}", "home_station": "s1"})
        assert answer["ok"], answer
    addresses = {r: await h.http_address.remote() for r, h in handles.items()}
    status = {s["replica"]: s for s in await cp.status()}

    async def replicated() -> dict[int, int] | None:
        counts = {r: len(await h.query.remote("uavs", None, "stale")) for r, h in handles.items()}
        return counts if all(n == 10 for n in counts.values()) else None

    counts = await until(replicated, "every replica to apply the writes", 30)
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
        "stations": {r: s["station"] for r, s in status.items()},
        "counts": counts,
        "unauthenticated": unauthenticated,
        "commit_before": before,
        "commit_after": after,
    }


async def replaced(lost_at: float) -> dict[str, Any]:
    controller = find_controller(GROUP)
    assert controller is not None, "jobs.deploy started no controller"

    async def done() -> dict[str, Any] | None:
        report: dict[str, Any] = await controller.status.remote()
        return report if report.get("replaced") else None

    report = await until(done, "the controller to replace the lost station's member", 120)
    seconds = time.time() - lost_at
    handles = group_replicas(GROUP)
    [move] = report["replaced"]
    leader = await find_leader(handles, 30)
    cp = ControlPlane(GROUP, handles)
    answer = await cp.command({"type": "register_uav", "uav": "after", "home_station": "s1"})
    newcomer = handles[move["new"]]

    async def caught_up() -> int | None:
        n = len(await newcomer.query.remote("uavs", None, "stale"))
        return n if n == 11 else None

    return {
        "seconds": seconds,
        "move": move,
        "report": report,
        "voters": (await handles[leader].status.remote())["voters"],
        "write_after": answer["ok"],
        "newcomer_uavs": await until(caught_up, "the new member to catch up", 30),
        "newcomer_address": await newcomer.http_address.remote(),
    }


async def main(mode: str, address: str, args: list[str]) -> dict[str, Any]:
    ray.init(address=address, namespace="uav-control-plane", logging_level=logging.ERROR, log_to_driver=False)
    if mode == "check":
        return await check()
    return await replaced(float(args[0]))


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))), flush=True)
