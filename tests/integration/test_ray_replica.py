"""Replicas as Ray actors: restart recovery from disk, and refusal to rejoin without a disk."""

import asyncio
import json
import os
import shutil

import pytest
import ray

from controlplane.actors import deploy, find_leader, group_replicas
from controlplane.client import propose_to_leader
from tests.integration.fleet_commands import STATION, register


@pytest.fixture(scope="module")
def fault_plan(tmp_path_factory):
    """A fault-plan file the replicas watch (rpc/faults.py); absent means no faults. Set
    before Ray starts, so its workers inherit it."""
    plan = tmp_path_factory.mktemp("faults") / "plan"
    os.environ["UAV_FAULTS_FILE"] = str(plan)
    yield plan
    del os.environ["UAV_FAULTS_FILE"]


@pytest.fixture(scope="module")
def ray_session(fault_plan):
    ray.init(
        address="local",
        include_dashboard=False,
        num_cpus=2,
        resources={f"station:{s}": 1 for s in ("s1", "s2", "s3")},
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def test_restarted_replica_recovers_every_acknowledged_write_and_a_diskless_one_is_refused(ray_session, tmp_path):
    async def go():
        handles = deploy("rec", ["s1", "s2", "s3"], str(tmp_path))
        try:
            leader = await find_leader(handles, 60)
            await propose_to_leader(handles, STATION)
            for i in range(30):
                await propose_to_leader(handles, register(i))
            follower = next(r for r in handles if r != leader)
            ray.kill(handles[follower], no_restart=False)  # Ray restarts it: __init__ runs again
            for i in range(30, 40):
                await propose_to_leader(handles, register(i))
            await asyncio.sleep(0.5)
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                try:
                    st = await handles[follower].status.remote()
                except ray.exceptions.ActorUnavailableError:  # still restarting
                    st = {"uavs": None}
                if st["uavs"] == 40:
                    break
                assert asyncio.get_running_loop().time() < deadline, st
                await asyncio.sleep(0.1)
            assert st["recovered_entries"] >= 30  # it came back with its log, not from scratch
            for i in range(40):
                assert (await handles[follower].query.remote("uav", {"id": f"k{i}"}, "stale"))["battery"] == i

            # Now the station loses its disk: the replica must refuse to vote as a blank copy.
            victim = next(r for r in handles if r not in (leader, follower))
            before = (await handles[victim].status.remote())["started_at"]
            shutil.rmtree(tmp_path / "rec" / str(victim))
            ray.kill(handles[victim], no_restart=False)
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                assert asyncio.get_running_loop().time() < deadline, "the restarted replica never answered"
                try:
                    st = await handles[victim].status.remote()
                except ray.exceptions.RayTaskError as exc:
                    assert "refusing to rejoin under the old identity" in str(exc)
                    break
                except ray.exceptions.RayActorError:
                    pass  # still restarting
                else:
                    assert st["started_at"] == before, f"came back blank as a voter: {st}"
                await asyncio.sleep(0.1)
            await propose_to_leader(handles, register(1000))  # two of three carry on
        finally:
            for h in handles.values():
                ray.kill(h, no_restart=True)

    asyncio.run(go())


def test_a_replica_whose_raft_loop_fails_goes_down_and_comes_back_from_its_disk(ray_session, fault_plan, tmp_path):
    """Defect 4 on real Ray: the leader's disk fails an fsync, its Raft loop dies, and the
    replica must not linger as a frozen leader: the actor exits, Ray restarts it, and it
    serves again from its own disk."""

    async def go():
        handles = deploy("dead", ["s1", "s2", "s3"], str(tmp_path))
        try:
            leader = await find_leader(handles, 60)
            await propose_to_leader(handles, STATION)
            for i in range(10):
                await propose_to_leader(handles, register(i))
            before = (await handles[leader].status.remote())["started_at"]
            fault_plan.write_text(f"disk_error={leader}")
            await propose_to_leader(handles, register(10), timeout=30)  # lands with a new leader
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                assert asyncio.get_running_loop().time() < deadline, "the failed replica never came back"
                try:
                    st = await asyncio.wait_for(handles[leader].status.remote(), 5)
                except (ray.exceptions.RayActorError, TimeoutError):
                    st = None
                if st is not None and st["started_at"] > before and st["uavs"] == 11:
                    break
                await asyncio.sleep(0.2)
            assert st["recovered_entries"] >= 11  # back from its log, not from scratch
        finally:
            fault_plan.unlink(missing_ok=True)
            for h in handles.values():
                ray.kill(h, no_restart=True)

    asyncio.run(go())


def _frozen_objects(actor: object) -> int:
    import gc

    return gc.get_freeze_count()


def test_sdk_commands_queries_watch_and_retries_apply_once(ray_session, tmp_path):
    from controlplane.client import ControlPlane
    from controlplane.state.fleet import encode
    from controlplane.state.model import CommandError

    async def go():
        deploy("sdk", ["s1", "s2", "s3"], str(tmp_path))
        cp = ControlPlane.connect("sdk")
        try:
            assert sorted(cp.replicas) == [1, 2, 3]
            assert (await cp.command({"type": "register_station", "station": "s"}))["ok"]
            answer = await cp.command({"type": "register_uav", "uav": "uav-7", "home_station": "s", "battery": 88})
            assert answer["ok"]
            assert (await cp.query("uav", {"id": "uav-7"}))["battery"] == 88
            with pytest.raises(CommandError, match="battery"):  # refused before it is proposed
                await cp.command({"type": "update_uav", "uav": "uav-7", "battery": 120})
            # A retry whose first answer was lost: the same (client, seq) bytes again.
            data = encode({"type": "create_group", "group": "g", "client": "key:another-client", "seq": 99})
            leader = cp.replicas[await find_leader(cp.replicas)]
            first = await leader.propose.remote(data)
            second = await leader.propose.remote(data)
            assert second == first and first["ok"]  # applied once, answered twice
            # A stale version is a conflict, not an overwrite.
            conflict = await cp.command({"type": "update_uav", "uav": "uav-7", "battery": 50, "expected_version": 7})
            assert conflict["conflict"] and (await cp.query("uav", {"id": "uav-7"}))["battery"] == 88
            changes = await cp.watch(0, ["uav", "group"], timeout=1)
            assert [(c["kind"], c["id"]) for c in changes["changes"]] == [("uav", "uav-7"), ("group", "g")]
            statuses = await cp.status()
            assert len(statuses) == 3 and all("role" in s for s in statuses)
            # Each started replica froze what it held (full collections no longer walk it).
            frozen = await asyncio.gather(*(h.__ray_call__.remote(_frozen_objects) for h in cp.replicas.values()))
            assert all(n > 10_000 for n in frozen), frozen
            with pytest.raises(ValueError, match="consistency"):
                await cp.query("uav", {"id": "uav-7"}, consistency="eventual")
        finally:
            for h in cp.replicas.values():
                ray.kill(h, no_restart=True)

    asyncio.run(go())


def test_concurrent_sdk_clients_of_one_process_share_one_leader_stream_and_keep_their_own_answers(
    ray_session, tmp_path, monkeypatch
):
    from controlplane import client as client_module
    from controlplane.client import ControlPlane
    from controlplane.leader_stream import connection
    from controlplane.leader_stream.connection import streams_in_this_loop
    from controlplane.state.model import NotFoundError

    # Every stream the process opens: a leader whose loop stalls past the heartbeat (a busy
    # 2-core machine) has its stream dropped and a new one opened, which carries the rest.
    opened: list[connection.LeaderStream] = []

    class Recorded(connection.LeaderStream):
        def __init__(self, url: str, token: str | None) -> None:
            super().__init__(url, token)
            opened.append(self)

    monkeypatch.setattr(connection, "LeaderStream", Recorded)
    # Every leader lookup the process starts (each asks every replica's status).
    lookups: list[int] = []

    async def counted_find_leader(handles, timeout=15.0):
        lookups.append(1)
        return await find_leader(handles, timeout)

    monkeypatch.setattr(client_module, "find_leader", counted_find_leader)

    async def terms(replicas):
        return {s["term"] for s in await asyncio.gather(*(h.status.remote() for h in replicas.values()))}

    async def go():
        replicas = deploy("shared", ["s1", "s2", "s3"], str(tmp_path))
        clients = [ControlPlane("shared", replicas) for _ in range(40)]
        try:
            await find_leader(replicas, 60)
            first_term = min(await terms(replicas))
            assert (await clients[0].command({"type": "register_station", "station": "s"}))["ok"]
            answers = await asyncio.gather(
                *(
                    c.command({"type": "register_uav", "uav": f"u{i}", "home_station": "s", "battery": i})
                    for i, c in enumerate(clients)
                )
            )
            assert all(a["ok"] and a["version"] == 1 for a in answers)
            assert len(streams_in_this_loop()) == 1  # one connection to the leader for all 40 clients
            requests, frames = sum(s.requests_sent for s in opened), sum(s.frames_sent for s in opened)
            if len(opened) == 1:
                assert requests == 41 + 40  # each command once
            else:  # requests on a dropped stream were resent on the next
                assert requests >= 41 + 40 and all(s.disposable for s in opened[:-1])
            assert frames < requests  # the clients' requests shared frames
            queries = [c.query("uav", {"id": f"u{i}"}) for i, c in enumerate(clients)]
            queries.append(clients[0].query("uav", {"id": "nobody"}))
            results = await asyncio.gather(*queries, return_exceptions=True)
            assert [r["battery"] for r in results[:-1]] == list(range(40))
            assert isinstance(results[-1], NotFoundError)  # its own error; the others answered
            again = await asyncio.gather(
                *(c.command({"type": "update_uav", "uav": "u0", "battery": 5}) for c in clients)
            )
            assert sorted(a["version"] for a in again) == list(range(2, 42))  # each applied exactly once
            # The 40 clients shared one lookup: another only after a leader change.
            assert 1 <= len(lookups) <= 1 + max(await terms(replicas)) - first_term
        finally:
            for h in replicas.values():
                ray.kill(h, no_restart=True)

    asyncio.run(go())


def test_replicas_serving_no_http_are_reached_by_actor_calls(ray_session, tmp_path):
    from controlplane import replica_calls
    from controlplane.client import ControlPlane
    from controlplane.leader_stream.connection import streams_in_this_loop

    async def go():
        from controlplane.actors import start_ingest

        replicas = deploy("actors-only", ["s1", "s2", "s3"], str(tmp_path), transport="ray")
        cp = ControlPlane("actors-only", replicas)
        ingest = start_ingest("actors-only", "s1")
        try:
            assert (await cp.command({"type": "register_station", "station": "s"}))["ok"]
            assert (await cp.command({"type": "register_uav", "uav": "u1", "home_station": "s"}))["ok"]
            assert (await cp.query("uav", {"id": "u1"}))["home_station"] == "s"
            assert streams_in_this_loop() == []
            assert replica_calls.sent_in_this_loop()["propose"][1] >= 3  # two commands and a session
            # A station's telemetry reaches such a leader by an actor call too.
            answer = await ingest.report.remote([{"uav": "u1", "time": 5.0, "seq": 1, "battery": 42.0}], wait=True)
            assert sum(a["accepted"] for a in answer["applied"]) == 1
            assert (await cp.query("uav", {"id": "u1"}))["battery"] == 42.0
            assert (await ingest.flush.remote())["forwarded"] == {"stream": 0, "ray": 1}
        finally:
            for h in [*replicas.values(), ingest]:
                ray.kill(h, no_restart=True)

    asyncio.run(go())


def test_controller_replaces_a_replica_that_lost_its_disk(ray_session, tmp_path):
    from controlplane.controller import Controller, RayNodeStations
    from controlplane.placement.embedded import EmbeddedRegistry, EmbeddedServiceDiscovery

    async def go():
        discovery = EmbeddedServiceDiscovery(EmbeddedRegistry())
        controller = Controller("disk", 3, str(tmp_path), discovery, stations=RayNodeStations(), grace=2.0)
        handles = await controller.deploy()
        try:
            leader = await find_leader(handles, 60)
            await propose_to_leader(handles, STATION)
            for i in range(10):
                await propose_to_leader(handles, register(i))
            victim = next(r for r in handles if r != leader)
            placement, _ = await controller.planner.current()
            shutil.rmtree(tmp_path / "disk" / str(victim))
            ray.kill(handles[victim], no_restart=False)
            deadline = asyncio.get_running_loop().time() + 60
            replaced = []
            while not replaced:
                assert asyncio.get_running_loop().time() < deadline, "the disk-less replica was never replaced"
                replaced = await controller.reconcile_once()
                await asyncio.sleep(0.2)
            [(move, new_id)] = replaced
            assert move.replica == victim and move.to_station == placement[victim]
            leader = await find_leader(handles, 30)
            st = await handles[leader].status.remote()
            assert sorted(st["voters"]) == sorted(handles) and victim not in st["voters"]
            while (await handles[new_id].status.remote())["uavs"] < 10:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
        finally:
            for h in handles.values():
                ray.kill(h, no_restart=True)
            await discovery.close()

    asyncio.run(asyncio.wait_for(go(), 180))


def test_a_replacement_runs_with_every_setting_of_the_group(ray_session, tmp_path):
    """replace_replica rebuilt the spec from a few of its arguments and dropped the rest
    (auto-register, snapshot interval, telemetry batching, election ticks). Here the group
    also keeps no RPC rows (rpc_stats=False): none are written, the counters still count."""
    import dataclasses

    from controlplane.actors import replace_replica
    from controlplane.sync.coalescer import CoalescerConfig

    async def go():
        telemetry = CoalescerConfig(max_size=1 << 20, max_delay=0.005, max_in_flight=3)
        handles = deploy(
            "same", ["s1", "s2", "s3"], str(tmp_path), tick_interval=0.04, snapshot_every=500,
            auto_register_uavs=True, telemetry=telemetry, rpc_stats=False,
        )  # fmt: skip
        try:
            leader = await find_leader(handles, 60)
            victim = next(r for r in handles if r != leader)  # its station is the one "lost"
            template = await handles[leader].get_spec.remote()
            ray.kill(handles[victim], no_restart=True)
            new_id = await replace_replica(handles, "same", victim, f"s{victim}")
            spec = await handles[new_id].get_spec.remote()
            assert spec.joining and spec.replica == new_id
            identity = {"replica": 99, "founders": (1,), "joining": True}
            assert dataclasses.replace(spec, **identity) == dataclasses.replace(template, **identity)
            assert spec.auto_register_uavs and spec.snapshot_every == 500 and spec.telemetry == telemetry
            assert not spec.rpc_stats
            flushed = await handles[leader].flush_stats.remote()
            assert flushed["file"] is None and flushed["rows"] == 0 and not flushed["rpc_stats"]
            assert flushed["statistics"]["total_requests"] > 0
            assert await handles[leader].stats_files.remote() == []
            assert not list(tmp_path.glob("same/*/rpc-stats/*.parquet"))
        finally:
            for h in handles.values():
                ray.kill(h, no_restart=True)

    asyncio.run(asyncio.wait_for(go(), 180))


def etcd_env() -> dict[str, str]:
    import urllib.request

    host, port = os.environ.get("ETCD_HOST", "127.0.0.1"), os.environ.get("ETCD_PORT", "23790")
    try:
        urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1)
    except OSError:
        if os.environ.get("CI"):
            pytest.fail("etcd is not running; scripts/test.sh starts it")
        pytest.skip("SKIPPED LOUDLY: no etcd (run scripts/test.sh)")
    return {"DISCOVERY_TYPE": "etcd", "ETCD_HOST": host, "ETCD_PORT": port}


def test_with_etcd_replicas_register_there_and_the_controller_keeps_its_map_in_its_kv(ray_session, tmp_path):
    from controlplane.controller_actor import start_controller
    from controlplane.placement.etcd import EtcdServiceDiscovery

    env = etcd_env()

    async def go():
        group = f"etcdg{os.getpid()}"
        handles = deploy(group, ["s1", "s2", "s3"], str(tmp_path), discovery_env=env)
        controller = None
        d = EtcdServiceDiscovery(env["ETCD_HOST"], int(env["ETCD_PORT"]))
        try:
            await find_leader(handles, 60)
            addresses = {f"{group}-{r}": await h.http_address.remote() for r, h in handles.items()}
            deadline = asyncio.get_running_loop().time() + 20
            while True:
                found = {n.node_id: n for n in await d.discover("raft-node") if n.meta.get("group") == group}
                if len(found) == 3:
                    break
                assert asyncio.get_running_loop().time() < deadline, f"replicas never registered: {found}"
                await asyncio.sleep(0.2)
            for node_id, url in addresses.items():  # each under the address peers reach it on
                assert f"http://{found[node_id].address}:{found[node_id].port}" == url
            assert {n.meta["station"] for n in found.values()} == {"s1", "s2", "s3"}
            controller = start_controller(group, str(tmp_path), {1: "s1", 2: "s2", 3: "s3"}, env, grace=30)
            while True:
                report = await controller.status.remote()
                if report.get("started") and report["map_version"]:
                    break
                assert asyncio.get_running_loop().time() < deadline + 20, report
                await asyncio.sleep(0.2)
            assert report["discovery"] == "etcd"
            entry = await d.kv_get(f"placement/{group}")  # the map is in etcd's KV
            assert entry is not None and json.loads(entry.value)["assignments"] == {"1": "s1", "2": "s2", "3": "s3"}
        finally:
            if controller is not None:
                ray.kill(controller, no_restart=True)
            for h in handles.values():
                ray.kill(h, no_restart=True)
            await d.kv_delete(f"placement/{group}")
            await d.close()

    asyncio.run(asyncio.wait_for(go(), 180))


def test_station_agents_register_with_ttl_in_etcd(ray_session):
    from controlplane.actors import start_station_agents
    from controlplane.placement.etcd import EtcdServiceDiscovery
    from controlplane.placement.planner import DiscoveryStations

    env = etcd_env()
    host, port = env["ETCD_HOST"], env["ETCD_PORT"]
    agents = start_station_agents(["s1", "s2", "s3"], env, ttl=2)

    async def go():
        d = EtcdServiceDiscovery(host, int(port))
        try:
            stations = await DiscoveryStations(d).healthy_stations()
            assert {"s1", "s2", "s3"} <= {s.name for s in stations}
            assert all(s.ray_node_id for s in stations)
            info = await agents["s1"].info.remote()  # registered under the address it serves on
            assert [s.address for s in stations if s.name == "s1"] == [info["address"]] and info["port"] > 0
            ray.kill(agents["s2"], no_restart=True)  # the station's agent dies with it
            deadline = asyncio.get_running_loop().time() + 15
            while "s2" in {s.name for s in await DiscoveryStations(d).healthy_stations()}:
                assert asyncio.get_running_loop().time() < deadline, "the TTL never lapsed"
                await asyncio.sleep(0.2)
        finally:
            for a in agents.values():
                ray.kill(a, no_restart=True)
            await d.close()

    asyncio.run(go())


def test_telemetry_through_station_ingest_survives_a_leader_kill(ray_session, tmp_path):
    from controlplane.actors import start_ingest
    from controlplane.client import ControlPlane
    from controlplane.sync.synchronizer import DataSynchronizer

    async def go():
        handles = deploy("tel", ["s1", "s2", "s3"], str(tmp_path), auto_register_uavs=True)
        ingest = start_ingest("tel", "s1")
        cp = ControlPlane("tel", handles)
        sync = DataSynchronizer(cp, watch_timeout=0.5)
        try:
            await find_leader(handles, 60)
            await cp.command({"type": "register_station", "station": "s1"})
            await sync.start_sync_service()
            rows = [{"uav": f"d{i}", "time": 10.0, "seq": 1, "lat": 47.0 + i / 100} for i in range(20)]
            answer = await ingest.report.remote([*rows, {"uav": "d99", "time": 10.0, "seq": 1, "lat": 123}], wait=True)
            assert answer["accepted"] == 20 and answer["reasons"][0]["field"] == "lat"
            # Registered once each; a batch re-sent after a lost answer counts as duplicates.
            assert sum(a["registered"] + a["duplicate"] for a in answer["applied"]) >= 20
            assert sum(a["registered"] for a in answer["applied"]) <= 20
            uavs = await cp.query("uavs", {"station": "s1"})
            assert sorted(u["id"] for u in uavs) == sorted(r["uav"] for r in rows)
            leader = await find_leader(handles, 10)
            ray.kill(handles[leader], no_restart=False)
            newer = [{**r, "time": 11.0, "lat": 1.0} for r in rows]
            older = [{**r, "time": 9.0, "lat": 2.0} for r in rows[:5]]
            answer = await ingest.report.remote(newer + older, wait=True)  # finds the new leader itself
            assert sum(a["stale"] for a in answer["applied"]) == 5
            assert (await cp.query("uav", {"id": "d3"}))["lat"] == 1.0
            # Both batches went over the leaders' streams, not as actor calls.
            assert (await ingest.flush.remote())["forwarded"] == {"stream": 2, "ray": 0}
            assert await ingest.__ray_call__.remote(_frozen_objects) > 10_000  # its process froze what it held
            await cp.command({"type": "create_group", "group": "g"})
            deadline = asyncio.get_running_loop().time() + 15
            while "g" not in sync.groups:  # the change feed brought it to the local view
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
            report = await sync.compare_digests(timeout=30)
            assert report.ok and not report.missing, report
        finally:
            await sync.stop()
            for h in [*handles.values(), ingest]:
                ray.kill(h, no_restart=True)

    asyncio.run(asyncio.wait_for(go(), 180))


def test_http_api_on_ray_reaches_the_leader_whoever_leads(ray_session, tmp_path):
    import aiohttp
    from aiohttp.test_utils import TestServer

    from controlplane.api.backend import RayFleetBackend
    from controlplane.api.server import FleetAPI
    from controlplane.client import ControlPlane

    async def go():
        handles = deploy("api", ["s1", "s2", "s3"], str(tmp_path))
        server = None
        try:
            await find_leader(handles, 60)
            cp = ControlPlane("api", handles)
            await cp.command({"type": "register_station", "station": "s1"})
            server = TestServer(FleetAPI(RayFleetBackend("api"), token="t").application(), host="127.0.0.1")
            await server.start_server()
            auth = {"Authorization": "Bearer t"}
            async with aiohttp.ClientSession(str(server.make_url(""))) as http:
                async with http.post("/v1/uavs", json={"uav": "a1", "home_station": "s1"}, headers=auth) as r:
                    assert r.status == 201
                async with http.post("/v1/stations/nowhere/telemetry", json={"reports": []}, headers=auth) as r:
                    assert r.status == 404 and (await r.json())["error"]["field"] == "station"
                ray.kill(handles[await find_leader(handles, 10)], no_restart=False)  # the API follows the new leader
                report = {"reports": [{"uav": "a1", "time": 1.0, "seq": 1, "lat": 10.0}]}
                async with http.post("/v1/stations/s1/telemetry", json=report, headers=auth) as r:
                    assert r.status == 200 and (await r.json())["accepted"] == 1
                async with http.get("/v1/uavs/a1", headers=auth) as r:
                    assert r.status == 200 and (await r.json())["lat"] == 10.0
                async with http.get("/v1/uavs/zz", headers=auth) as r:
                    assert r.status == 404
                async with http.get("/v1/status", headers=auth) as r:
                    assert len((await r.json())["replicas"]) == 3
        finally:
            if server is not None:
                await server.close()
            for h in handles.values():
                ray.kill(h, no_restart=True)

    asyncio.run(asyncio.wait_for(go(), 180))


def _ray_metrics(group: str) -> dict[str, float]:
    """This group's series on Ray's own Prometheus endpoint, summed per metric name."""
    import urllib.request

    node = ray._private.worker.global_worker.node
    url = f"http://{node.node_ip_address}:{node.metrics_export_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("ray_controlplane_") and f'group="{group}"' in line:
            metric, value = line.rsplit(" ", 1)
            name = metric.split("{", 1)[0]
            totals[name] = totals.get(name, 0.0) + float(value)
    return totals


def test_replicas_report_on_rays_prometheus_endpoint_and_the_numbers_move(ray_session, tmp_path):
    from controlplane.client import ControlPlane

    async def until(what, condition, timeout=60.0):
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            value = await asyncio.to_thread(condition)
            if value:
                return value
            await asyncio.sleep(1.0)
        raise AssertionError(f"timed out waiting for {what}: {await asyncio.to_thread(_ray_metrics, 'met')}")

    async def go():
        handles = deploy("met", ["s1", "s2", "s3"], str(tmp_path))
        cp = ControlPlane("met", handles)
        try:
            await find_leader(handles, 60)
            await cp.command({"type": "register_station", "station": "s1"})

            def exported(at_least: float):
                def check():
                    m = _ray_metrics("met")
                    return m if m.get("ray_controlplane_proposals_total", 0) >= at_least else None

                return check

            before = await until("the first export", exported(1))
            assert before["ray_controlplane_raft_is_leader"] == 1  # one leader among the three
            for i in range(30):
                await cp.command({"type": "register_uav", "uav": f"m{i}", "home_station": "s1"})
            after = await until("30 more proposals", exported(before["ray_controlplane_proposals_total"] + 30))
            assert after["ray_controlplane_raft_commit_index"] > before["ray_controlplane_raft_commit_index"]
            assert after["ray_controlplane_rpc_attempts_total"] > before["ray_controlplane_rpc_attempts_total"]
        finally:
            for h in handles.values():
                ray.kill(h, no_restart=True)

    asyncio.run(asyncio.wait_for(go(), 240))


def test_peer_rpc_is_authenticated_by_default_with_the_groups_own_secret(ray_session, tmp_path):
    import aiohttp

    from controlplane.cluster_secret import group_secret

    async def go():
        handles = deploy("sec", ["s1", "s2", "s3"], str(tmp_path))  # no token given
        try:
            await find_leader(handles, 60)  # the replicas authenticate each other with the group's secret
            address = await handles[1].http_address.remote()
            spec = await handles[1].get_spec.remote()
            secret = group_secret("sec")
            assert spec.cluster_token is None and secret not in repr(spec)  # the spec never carries it
            async with aiohttp.ClientSession() as http:
                async with http.post(address + "/raft/v1/messages", data=b"") as r:
                    assert r.status == 401  # no token: refused
                headers = {"Authorization": f"Bearer {secret}"}
                async with http.post(address + "/raft/v1/messages", data=b"\x00", headers=headers) as r:
                    assert r.status == 400  # the group's secret passes; the body is no Raft batch
        finally:
            for h in handles.values():
                ray.kill(h, no_restart=True)

    asyncio.run(asyncio.wait_for(go(), 120))


def test_the_controller_actor_runs_unattended_and_keeps_its_map_in_the_group(ray_session, tmp_path):
    """Started once (as jobs.deploy does), the controller stores the first map in the group's
    own state, survives its own restart with that map, and on its own replaces a replica
    that came back without its disk, recording the new member in the map."""
    from controlplane.controller_actor import find_controller, start_controller

    async def wait_for(condition, what, timeout=60):
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            try:
                value = await condition()
            except ray.exceptions.RayActorError:  # restarting
                value = None
            if value:
                return value
            assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.2)

    async def go():
        handles = deploy("ctl", ["s1", "s2", "s3"], str(tmp_path))
        controller = None
        try:
            leader = await find_leader(handles, 60)
            await propose_to_leader(handles, STATION)
            placement = {r: (await h.status.remote())["station"] for r, h in handles.items()}
            assert placement == {1: "s1", 2: "s2", 3: "s3"}  # replicas know the station they run on
            controller = start_controller("ctl", str(tmp_path), placement, {}, grace=2.0, interval=0.3)
            assert find_controller("ctl") is not None and find_controller("nosuch") is None

            async def stored():
                report = await controller.status.remote()
                return report if report.get("started") and report["map_version"] > 0 else None

            first = await wait_for(stored, "the first map")
            assert first["placement"] == {"1": "s1", "2": "s2", "3": "s3"} and first["discovery"] == "group state"
            assert {s["station"]: s["healthy"] for s in first["stations"]} == {"s1": True, "s2": True, "s3": True}
            record = await handles[leader].query.remote("control_kv", {"key": "placement/ctl"}, "linearizable")
            assert record["version"] == first["map_version"]  # the map is in the replicated state

            ray.kill(controller, no_restart=False)  # Ray restarts it; it reads the map back

            async def restarted():  # the kill lands a moment later: the old instance may answer first
                report = await stored()
                return report if report and report["started_at"] > first["started_at"] else None

            again = await wait_for(restarted, "the restarted controller")
            assert again["placement"] == first["placement"] and again["map_version"] == first["map_version"]

            victim = next(r for r in handles if r != leader)
            shutil.rmtree(tmp_path / "ctl" / str(victim))
            ray.kill(handles[victim], no_restart=False)

            async def replaced():
                report = await controller.status.remote()
                return report if report.get("replaced") else None  # a restarting one has no report yet

            report = await wait_for(replaced, "the disk-less replica's replacement", 90)
            [done] = report["replaced"]
            assert (done["old"], done["from"], done["to"], done["reason"]) == (
                victim, placement[victim], placement[victim], "lost_disk"
            )  # fmt: skip
            assert str(victim) not in report["placement"] and report["placement"][str(done["new"])] == placement[victim]
            for r, h in group_replicas("ctl").items():
                handles.setdefault(r, h)
        finally:
            if controller is not None:
                ray.kill(controller, no_restart=True)
            for h in group_replicas("ctl").values():
                ray.kill(h, no_restart=True)

    asyncio.run(asyncio.wait_for(go(), 240))


def test_a_controller_restarted_half_way_through_a_replacement_finishes_it(ray_session, tmp_path):
    """The move is in the map before anything starts; a controller that dies after the new
    member was started and added as a learner leaves it for the next controller, which
    promotes that same member and removes the old one: no second newcomer, no orphan."""
    import dataclasses

    from controlplane.actors import start_replica
    from controlplane.client import ControlPlane
    from controlplane.controller import Controller, RayNodeStations
    from controlplane.placement.group_store import GroupStateStore

    def controller(handles):
        store = GroupStateStore(ControlPlane("mid", handles))
        return Controller("mid", 3, str(tmp_path), store, stations=RayNodeStations(), grace=2.0)

    async def go():
        handles = deploy("mid", ["s1", "s2", "s3"], str(tmp_path))
        try:
            leader = await find_leader(handles, 60)
            await propose_to_leader(handles, STATION)
            for i in range(10):
                await propose_to_leader(handles, register(i))
            first = controller(handles)
            placement = await first.adopt(handles, {1: "s1", 2: "s2", 3: "s3"})
            victim = next(r for r in handles if r != leader)
            shutil.rmtree(tmp_path / "mid" / str(victim))
            ray.kill(handles[victim], no_restart=False)  # back without its disk: it refuses
            first.planner.id_floor = 4
            move = await first.planner.begin_move(victim, placement[victim])
            template = await handles[leader].get_spec.remote()
            spec = dataclasses.replace(template, replica=move.new, founders=(1, 2, 3), joining=True)
            start_replica(spec, move.to)
            await handles[leader].change_membership.remote("add_learner", move.new)
            # ... and the first controller is gone. The next one finds the move in the map:
            found = group_replicas("mid")
            second = controller(found)
            await second.adopt(found, {})  # the stored map wins over the (empty) one offered
            deadline = asyncio.get_running_loop().time() + 90
            replaced = []
            while not replaced:
                assert asyncio.get_running_loop().time() < deadline, "the move was never finished"
                replaced = await second.reconcile_once()
                await asyncio.sleep(0.2)
            [(done, new_id)] = replaced
            assert (done.replica, new_id, done.to_station) == (victim, move.new, placement[victim])
            members = group_replicas("mid")
            leader = await find_leader(members, 30)
            st = await members[leader].status.remote()
            assert sorted(st["voters"]) == sorted(members) and len(members) == 3 and victim not in members
            stored, _ = await second.planner.read()
            assert stored.assignments[move.new] == placement[victim] and not stored.moving
            assert await second.reconcile_once() == []  # settled
        finally:
            for h in group_replicas("mid").values():
                ray.kill(h, no_restart=True)

    asyncio.run(asyncio.wait_for(go(), 240))
