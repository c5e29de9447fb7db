"""The specification's own usage snippets (../shared/MISSION.md), run as it writes them
against a running group of standalone nodes that find each other through real etcd."""

from __future__ import annotations

import asyncio
import os

import pytest

from bench.standalone_nodes import CLUSTER_TOKEN, running_group
from controlplane.node_client import NodeGroup
from controlplane.placement.discovery import create_service_discovery
from controlplane.rpc.client import RaftRPCClient
from controlplane.rpc.config import RPCConfig
from controlplane.sync.synchronizer import DataSynchronizer
from tests.e2e.test_standalone_nodes import _etcd_env

pytestmark = pytest.mark.etcd


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    env = _etcd_env()
    del env["DISCOVERY_SERVICE"]  # the specification's default service, raft-node: only this module uses it
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # create_service_discovery() reads the environment, as in the spec
    try:
        with running_group(tmp_path_factory.mktemp("spec"), discovery=env) as nodes:
            yield nodes
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_the_specs_rpc_and_discovery_snippets(group):
    async def spec():
        discovery = create_service_discovery()  # chosen from the environment
        await discovery.register("node_9", "127.0.0.9", 8888)  # a node of its own, in the group's service
        nodes = await discovery.discover()
        seen = []
        watch = await discovery.watch(lambda event, node: seen.append(f"{event.value}: {node.node_id}"))

        config = RPCConfig(timeout=2.0, max_retries=3, retry_delay=0.1, retry_backoff=2.0, cluster_token=CLUSTER_TOKEN)
        rpc_client = RaftRPCClient(discovery, config)
        target_node_id, candidate_id = "node_2", "node_9"
        term, last_log_index, last_log_term = 1, 0, 0  # a stale candidate: refused, nothing disrupted
        result = await rpc_client.request_vote(target_node_id, candidate_id, term, last_log_index, last_log_term)
        appended = await rpc_client.append_entries("node_3", "node_9", 1, 0, 0, [], 0)
        stats = rpc_client.get_statistics()
        print(f"Success rate: {stats['success_rate']:.2%}")
        print(f"Total requests: {stats['total_requests']}")

        await discovery.deregister("node_9")
        deadline = asyncio.get_running_loop().time() + 10
        while "removed: node_9" not in seen and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        await watch.cancel()
        await rpc_client.close()
        await discovery.close()
        return nodes, result, appended, stats, seen

    nodes, result, appended, stats, seen = asyncio.run(spec())
    assert {"node_1", "node_2", "node_3", "node_9"} <= {n.node_id for n in nodes}
    group_term = group.status("node_2")["term"]
    assert result == {"term": group_term, "vote_granted": False, "node_id": 2}
    assert appended["success"] is False and appended["term"] >= group_term
    assert stats["total_requests"] == 2 and stats["success_rate"] == 1.0
    assert "removed: node_9" in seen
    assert group.leader() is not None and group.status("node_2")["term"] == group_term  # undisturbed


def test_the_specs_synchronizer_snippet(group):
    raft_node = NodeGroup([group.peer_url("node_1")], token=CLUSTER_TOKEN)
    resource_manager: dict = {}
    mission_scheduler: dict = {}

    async def spec():
        await raft_node.command({"type": "register_station", "station": "s1"})
        resource_manager["uav_001"] = {"id": "uav_001", "home_station": "s1", "battery": 95.0}
        mission_scheduler["mission_001"] = {"id": "mission_001", "waypoints": [{"lat": 47.4, "lon": 8.5, "alt": 30.0}]}

        synchronizer = DataSynchronizer(raft_node, resource_manager, mission_scheduler)
        await synchronizer.sync_uav("uav_001", "create")
        await synchronizer.sync_mission("mission_001", "create")
        await synchronizer.start_sync_service()
        mission_scheduler["mission_001"]["status"] = "active"
        resource_manager["uav_001"]["battery"] = 80.0
        await synchronizer.sync_mission("mission_001", "update")  # the record comes from the local manager
        await synchronizer.sync_uav("uav_001", "update")
        await synchronizer.sync_all_missions()
        await synchronizer.sync_all_uavs()
        report = await synchronizer.compare_digests()
        await synchronizer.stop()
        await raft_node.close()
        return report

    report = asyncio.run(spec())
    assert report.ok and not report.missing
    for name in group.founders:  # every node's API serves the synchronized records
        assert group.api(name, "GET", "/v1/missions/mission_001")[1]["status"] == "active"
        assert group.api(name, "GET", "/v1/uavs/uav_001")[1]["battery"] == 80.0
