"""The transport conformance cases for the Ray actor-call transport (real Ray)."""

import asyncio

import pytest
import ray

from controlplane.actors import NAMESPACE
from controlplane.raft.codec import decode_batch, encode_batch
from controlplane.raft.messages import AppendEntries, Entry, Heartbeat, RequestVote
from controlplane.rpc.errors import RPCConnectionError, RPCRejectedError, RPCTimeoutError
from controlplane.rpc.ray import RayTransport

MESSAGES = [
    RequestVote(1, 2, 5, 10, 4, pre_vote=True),
    AppendEntries(1, 2, 5, 9, 4, (Entry(5, 10, b"\x00payload\xff"),), 9),
    Heartbeat(1, 2, 5, 9, read_seq=3),
]


@ray.remote
class Receiver:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.delay = 0.0

    async def receive(self, body: bytes) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        decode_batch(body)  # CodecError is a ValueError: the transport reports a rejection
        self.bodies.append(body)

    async def set_delay(self, delay: float) -> None:
        self.delay = delay

    async def received(self) -> list[bytes]:
        return self.bodies


@pytest.fixture(scope="module")
def receiver():
    ray.init(address="local", include_dashboard=False, num_cpus=2, log_to_driver=False)
    actor = Receiver.options(name="transport-receiver", namespace=NAMESPACE).remote()
    yield actor
    ray.kill(actor)
    ray.shutdown()


def test_ray_transport_conformance(receiver):
    async def go():
        t = RayTransport(NAMESPACE)
        for _ in range(3):
            await t.send("transport-receiver", encode_batch(MESSAGES), 5.0)
        assert [decode_batch(b) for b in await receiver.received.remote()] == [MESSAGES] * 3
        with pytest.raises(RPCConnectionError) as info:
            await t.send("nobody-here", encode_batch(MESSAGES), 1.0)
        assert isinstance(info.value, ConnectionError)
        with pytest.raises(RPCRejectedError):
            await t.send("transport-receiver", b"\x01\x00\x00\x00garbage", 5.0)
        await receiver.set_delay.remote(1.0)
        with pytest.raises(RPCTimeoutError) as tinfo:
            await t.send("transport-receiver", encode_batch(MESSAGES), 0.1)
        assert isinstance(tinfo.value, TimeoutError)
        await receiver.set_delay.remote(0.0)
        await t.close()

    asyncio.run(go())
