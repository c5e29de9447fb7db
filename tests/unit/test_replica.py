"""The replica composition both shells run: what clients get back from propose_many."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from controlplane.raft.storage import MemoryStorage
from controlplane.replica import Replica, ReplicaSettings
from controlplane.rpc.transport import InMemoryNetwork
from controlplane.state.fleet import encode
from controlplane.state.telemetry import encode_entry, encode_segment, normalize


@contextlib.asynccontextmanager
async def leading_replica() -> AsyncIterator[Replica]:
    """A group of one, led by its only replica."""
    storage = MemoryStorage()
    storage.bootstrap([1])
    replica = Replica(1, storage, InMemoryNetwork().transport(), lambda n: f"mem://{n}", ReplicaSettings(0.01))
    await replica.start()
    try:
        async with asyncio.timeout(10):
            while not replica.node.is_leader:
                await asyncio.sleep(0.01)
        yield replica
    finally:
        await replica.stop()


def test_malformed_commands_are_refused_before_the_log_and_good_ones_applied():
    async def go():
        async with leading_replica() as replica:
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

    asyncio.run(asyncio.wait_for(go(), 30))


def test_the_leader_applies_the_telemetry_it_checked_without_decoding_it_again(monkeypatch):
    """A segment is decoded once on the leader (the check before the log); its apply takes
    those reports. Nothing of them is kept once the proposal is answered."""
    from controlplane.state import telemetry

    decoded: list[int] = []
    decode = telemetry._decode_segment

    def counted(data):
        decoded.append(len(data))
        return decode(data)

    monkeypatch.setattr(telemetry, "_decode_segment", counted)

    async def go():
        async with leading_replica() as replica:
            await replica.propose_many(
                [encode({"type": "register_station", "station": "alpha"})]
                + [encode({"type": "register_uav", "uav": f"u{k}", "home_station": "alpha"}) for k in range(2)]
            )
            segments = [
                encode_segment(
                    normalize([{"uav": f"u{k}", "time": 1.0, "seq": 1, "lat": 10.0 + k}], station="alpha")[0]
                )
                for k in range(2)
            ]
            answers = await replica.submit_segments(segments)
            assert [a["accepted"] for a in answers] == [2, 2]  # both went into one entry
            assert replica.state.uav("u1")["lat"] == 11.0
            assert len(decoded) == 2  # the checks; the apply decoded nothing
            assert replica.state._checked_telemetry == {}

    asyncio.run(asyncio.wait_for(go(), 30))
