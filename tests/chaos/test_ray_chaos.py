"""A fault campaign on real Ray (bounded, ~2 min): three SDK clients, and four HTTP clients
through two API server processes (concurrent requests on the API's one shared session, some
with Idempotency-Keys retried through the other API), write and read UAV state while the
leader actor is killed, the leader is cut off by an RPC partition, RPCs are dropped and
delayed, an API process is SIGKILLed and restarted, the leader's process is paused
(SIGSTOP) for longer than an election timeout and resumed, a follower is killed, and the
leader's station node is SIGKILLed (a fresh node for that station joins at the end). Each
station is its own Ray node on this machine. Afterwards: the clients' history is
linearizable (every acknowledged write is there, no read saw the impossible), no write the
API answered with a 4xx was applied, all replicas hold identical tables, and the
availability gaps are reported.

    bash scripts/test.sh -m chaos          (not in the default command)
"""

from __future__ import annotations

import asyncio
import itertools
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest
import ray

from bench.chaos_clients import KEYS, History, alt_of, first_value, register_keys, sdk_client, value_of
from bench.station_nodes import StationNodes
from controlplane.actors import deploy, find_leader
from controlplane.client import ControlPlane
from controlplane.sim.linearizability import Operation, check_history
from controlplane.sync.synchronizer import DataSynchronizer

pytestmark = [pytest.mark.slow, pytest.mark.chaos]
ROOT = Path(__file__).resolve().parents[2]
STATIONS = ["s1", "s2", "s3"]


class ApiProcess:
    """`python -m controlplane.api` as its own process on 127.0.0.1, as a station runs it."""

    def __init__(self, address: str, token: str) -> None:
        from tests.node_cluster import free_port

        self.address = address
        self.token = token
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    async def start(self) -> None:
        env = {**os.environ, "CONTROLPLANE_API_TOKEN": self.token, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "controlplane.api", "--group", "chaos", "--port", str(self.port),
             "--address", self.address],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                try:
                    async with http.get(f"{self.url}/healthz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("the API process did not come up")

    async def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def faulty_ray(tmp_path):
    plan = tmp_path / "faults"
    os.environ["UAV_FAULTS_FILE"] = str(plan)  # the nodes, and so the actors, inherit it
    stations = StationNodes(STATIONS)
    ray.init(address=stations.cluster.address, log_to_driver=False)
    yield plan, stations
    ray.shutdown()
    stations.shutdown()
    del os.environ["UAV_FAULTS_FILE"]


def test_history_stays_linearizable_under_kills_partitions_drops_delays_and_node_loss(faulty_ray, tmp_path):
    plan, stations = faulty_ray

    async def go():
        handles = deploy("chaos", STATIONS, str(tmp_path / "data"))
        setup = ControlPlane("chaos", handles)
        await find_leader(handles, 60)
        await register_keys(setup, "s1")
        recorded = History()
        history, done_at = recorded.ops, recorded.done_at
        stop = asyncio.Event()

        token = "chaos-api-token"
        apis = [ApiProcess(stations.cluster.address, token) for _ in range(2)]
        for api in apis:
            await api.start()
        refused: list[tuple[int, str]] = []  # (value, reason) of writes answered 4xx

        async def http_client(n: int) -> None:
            rng = random.Random(100 + n)
            value = first_value(n)
            headers = {"Authorization": f"Bearer {token}"}
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http:
                while not stop.is_set():
                    key = rng.choice(KEYS)
                    api = rng.choice(apis)
                    call = time.monotonic()
                    if rng.random() < 0.5:
                        value += 1
                        op = Operation(n, key, "write", value, call)
                        history.append(op)
                        keyed = rng.random() < 0.5
                        idem = {"Idempotency-Key": f"{n}-{value}"} if keyed else {}
                        for attempt in range(3 if keyed else 1):  # a keyed write may go again, anywhere
                            target = api if attempt == 0 else rng.choice(apis)
                            try:
                                async with http.patch(
                                    f"{target.url}/v1/uavs/{key}",
                                    json={"alt": alt_of(value)},
                                    headers={**headers, **idem},
                                ) as r:
                                    status, body = r.status, await r.json(content_type=None)
                            except (aiohttp.ClientError, TimeoutError):
                                continue  # no answer: unknown
                            if status == 200:
                                op.ret = time.monotonic()
                                done_at.append(op.ret)
                                break
                            if 400 <= status < 500:
                                refused.append((value, f"{status} {body}"))
                                history.remove(op)  # refused: it must not have happened
                                break
                            await asyncio.sleep(0.2)  # 503: outcome unknown, retry with the key
                    else:
                        op = Operation(n, key, "read", None, call)
                        try:
                            async with http.get(f"{api.url}/v1/uavs/{key}", headers=headers) as r:
                                if r.status != 200:
                                    continue
                                op.value = value_of((await r.json())["alt"])
                        except (aiohttp.ClientError, TimeoutError):
                            continue
                        op.ret = time.monotonic()
                        history.append(op)
                        done_at.append(op.ret)
                    await asyncio.sleep(0.01)

        clients = [
            asyncio.create_task(sdk_client(n, lambda: ControlPlane("chaos", handles), recorded, stop))
            for n in range(1, 4)
        ]
        clients += [asyncio.create_task(http_client(n)) for n in range(4, 8)]
        started = time.monotonic()
        faults: list[tuple[float, str]] = []

        async def fault(at: float, what: str, action) -> None:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            faults.append((round(time.monotonic() - started, 1), what))
            await action()

        async def kill(leader: bool) -> None:
            current = await find_leader(handles, 30)
            target = current if leader else next(r for r in handles if r != current)
            ray.kill(handles[target], no_restart=False)

        async def isolate_leader() -> None:
            plan.write_text(f"isolate={await find_leader(handles, 30)}")

        async def lossy() -> None:
            plan.write_text("drop=0.2; delay=1-30")

        async def heal() -> None:
            plan.write_text("")

        async def kill_an_api() -> None:
            await apis[0].kill()
            await asyncio.sleep(1.0)
            await apis[0].start()

        async def pause_leader() -> None:
            current = await find_leader(handles, 30)
            pid = await handles[current].__ray_call__.remote(lambda _replica: os.getpid())
            os.kill(pid, signal.SIGSTOP)  # a GC pause, a frozen VM: longer than an election timeout
            await asyncio.sleep(2.5)
            os.kill(pid, signal.SIGCONT)

        lost: list[str] = []

        async def kill_leader_node() -> None:
            current = await find_leader(handles, 30)
            pid = await handles[current].__ray_call__.remote(lambda _replica: os.getpid())
            lost.append(STATIONS[current - 1])  # deploy places replica i on the i-th station
            stations.kill(lost[-1], [pid])

        await fault(4, "kill leader actor", lambda: kill(True))
        await fault(10, "partition: leader isolated", isolate_leader)
        await fault(14, "heal", heal)
        await fault(18, "drop 20% and delay 1-30 ms", lossy)
        await fault(25, "heal", heal)
        await fault(27, "SIGKILL an API process (and restart it)", kill_an_api)
        await fault(31, "SIGSTOP the leader for 2.5 s, then SIGCONT", pause_leader)
        await fault(37, "kill follower actor", lambda: kill(False))
        await fault(42, "SIGKILL the leader's station node", kill_leader_node)
        await asyncio.sleep(max(0.0, started + 50 - time.monotonic()))
        stop.set()
        await asyncio.gather(*clients)
        ended = time.monotonic()
        # Starting a Ray node blocks this loop for seconds (and must run on the main thread),
        # so the station comes back after the clients stop; its replica then catches up.
        stations.revive(lost.pop())

        for api in apis:
            await api.kill()
        acknowledged = [op for op in history if op.completed]
        read_values = {op.value for op in history if op.kind == "read" and op.completed}
        assert not [v for v, _ in refused if v in read_values], refused  # answered 4xx, yet applied
        result = check_history(history, initial=0)
        assert result.ok, f"not linearizable at key {result.failing_key}"
        assert sum(op.kind == "write" for op in acknowledged) > 50
        times = [started, *sorted(done_at), ended]
        gaps = sorted(((b - a, a - started) for a, b in itertools.pairwise(times)), reverse=True)[:3]
        report = await DataSynchronizer(setup).compare_digests(timeout=60)
        assert report.ok and not report.missing, report
        print(f"\nchaos: {len(history)} ops ({len(acknowledged)} acknowledged, {len(refused)} refused 4xx, "
              f"{sum(not op.completed for op in history)} unknown); faults {faults}; "
              f"longest gaps {[f'{g:.2f} s at {at:.1f} s' for g, at in gaps]}; "
              f"digests equal at index {report.index}")  # fmt: skip
        for h in handles.values():
            ray.kill(h, no_restart=True)

    asyncio.run(asyncio.wait_for(go(), 300))
