"""A station's Ray node is removed (ray.cluster_utils.Cluster): its replica is re-placed
on a spare station through a membership change and the group is back to three voters."""

import asyncio

import pytest
import ray
from ray.cluster_utils import Cluster

from controlplane.actors import find_leader
from controlplane.client import propose_to_leader
from controlplane.controller import Controller, RayNodeStations
from controlplane.placement.embedded import EmbeddedRegistry, EmbeddedServiceDiscovery
from tests.integration.fleet_commands import STATION, register


@pytest.fixture(scope="module")
def station_cluster():
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "_system_config": {"health_check_period_ms": 1000, "health_check_failure_threshold": 3},
        },
    )
    nodes = {s: cluster.add_node(num_cpus=1, resources={f"station:{s}": 1}) for s in ("s1", "s2", "s3", "s4")}
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster, nodes
    ray.shutdown()
    cluster.shutdown()


def test_lost_station_replica_is_replaced_by_membership_change(station_cluster, tmp_path):
    """The controller places the group from Ray's station nodes, then notices the lost
    station (after the grace period) and replaces the member on the spare station."""
    cluster, nodes = station_cluster

    async def go():
        discovery = EmbeddedServiceDiscovery(EmbeddedRegistry())  # holds the placement map
        controller = Controller("loss", 3, str(tmp_path), discovery, stations=RayNodeStations(), grace=2.0)
        handles = await controller.deploy()
        try:
            placement, _ = await controller.planner.current()
            assert len(set(placement.values())) == 3
            leader = await find_leader(handles, 60)
            await propose_to_leader(handles, STATION)
            for i in range(20):
                await propose_to_leader(handles, register(i))
            victim = next(r for r in handles if r != leader)
            spare = next(s for s in nodes if s not in placement.values())
            cluster.remove_node(nodes[placement[victim]])
            survivors = {r: h for r, h in handles.items() if r != victim}
            await propose_to_leader(survivors, register(1001))  # two of three still commit
            deadline = asyncio.get_running_loop().time() + 90
            replaced = []
            while not replaced:
                assert asyncio.get_running_loop().time() < deadline, "the lost station was never replaced"
                replaced = await controller.reconcile_once()
                await asyncio.sleep(0.5)
            [(move, new_id)] = replaced
            assert (move.replica, move.to_station) == (victim, spare)
            assert victim not in handles and new_id in handles
            stored, _ = await controller.planner.current()
            assert stored[new_id] == spare and victim not in stored
            leader = await find_leader(handles, 30)
            st = await handles[leader].status.remote()
            assert sorted(st["voters"]) == sorted(handles) and len(st["voters"]) == 3
            await propose_to_leader(handles, register(1002))
            while (await handles[new_id].status.remote())["uavs"] < 22:
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.1)
            assert (await handles[new_id].query.remote("uav", {"id": "k0"}, "stale"))["battery"] == 0
            assert await controller.reconcile_once() == []  # settled
        finally:
            for h in handles.values():
                ray.kill(h, no_restart=True)
            await discovery.close()

    asyncio.run(asyncio.wait_for(go(), 240))
