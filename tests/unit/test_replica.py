"""The replica composition both shells run: what clients get back from propose_many."""

from __future__ import annotations

import asyncio
import json

from controlplane.raft.storage import MemoryStorage
from controlplane.replica import Replica, ReplicaSettings
from controlplane.rpc.transport import InMemoryNetwork
from controlplane.state.fleet import encode
from controlplane.state.telemetry import encode_entry, normalize


def test_malformed_commands_are_refused_before_the_log_and_good_ones_applied():
    async def go():
        storage = MemoryStorage()
        storage.bootstrap([1])
        replica = Replica(1, storage, InMemoryNetwork().transport(), lambda n: f"mem://{n}", ReplicaSettings(0.01))
        await replica.start()
        try:
            while not replica.node.is_leader:
                await asyncio.sleep(0.01)
            before = replica.node.status().last_index
            table, _ = normalize([{"uav": "u", "time": 1.0, "seq": 1}], station="a")
            answers = await replica.propose_many(
                [
                    encode({"type": "register_station", "station": "alpha"}),
                    b"{not json",
                    json.dumps({"type": "register_uav", "uav": "has space", "home_station": "alpha"}).encode(),
                    json.dumps({"type": "checkpoint", "client": "c", "seq": "1"}).encode(),
                    encode_entry(table, auto_register=False),
                ]
            )
            assert [kind for kind, _ in answers] == ["ok"] * 5
            ok, *refused = [answer for _, answer in answers]
            assert ok["ok"] is True
            assert [(a["ok"], a["field"]) for a in refused] == [
                (False, "command"),
                (False, "uav"),
                (False, "seq"),
                (False, "command"),
            ]
            # one entry for the good command (and the leader's no-op came before): nothing else
            assert replica.node.status().last_index == before + 1
        finally:
            await replica.stop()

    asyncio.run(asyncio.wait_for(go(), 30))
