"""One suite over every transport: in-memory and HTTP (real aiohttp on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from controlplane.raft.codec import decode_batch, encode_batch
from controlplane.raft.messages import AppendEntries, Entry, Heartbeat, RequestVote
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.errors import RPCAuthError, RPCConnectionError, RPCRejectedError, RPCTimeoutError
from controlplane.rpc.http import HTTPTransport, HTTPTransportServer
from controlplane.rpc.transport import InMemoryNetwork

TOKEN = "s3cret-cluster-token-0123456789"


class Recorder:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.delay = 0.0

    async def __call__(self, body: bytes) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        decode_batch(body)  # raises ValueError (CodecError) on garbage
        self.bodies.append(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MemoryKind:
    def __init__(self) -> None:
        self.net = InMemoryNetwork()
        self.n = 0

    def server(self, token=None):
        self.n += 1
        return self.net.server(f"mem://{self.n}", token)

    def client(self, token=None):
        return self.net.transport(token)

    def dead_address(self):
        return "mem://nobody"


class HTTPKind:
    def server(self, token=None):
        return HTTPTransportServer("127.0.0.1", 0, token)

    def client(self, token=None):
        return HTTPTransport(RPCConfig(cluster_token=token))

    def dead_address(self):
        return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(params=["memory", "http"])
def kind(request):
    return MemoryKind() if request.param == "memory" else HTTPKind()


MESSAGES = [
    RequestVote(1, 2, 5, 10, 4, pre_vote=True),
    AppendEntries(1, 2, 5, 9, 4, (Entry(5, 10, b"\x00payload\xff"),), 9),
    Heartbeat(1, 2, 5, 9, read_seq=3),
]


def run(coro):
    return asyncio.run(coro)


def test_delivers_batches_intact(kind):
    async def go():
        server, handler = kind.server(), Recorder()
        await server.start(handler)
        client = kind.client()
        try:
            for _ in range(3):  # reuses the pooled connection
                await client.send(server.address, encode_batch(MESSAGES), 2.0)
        finally:
            await client.close()
            await server.close()
        assert [decode_batch(b) for b in handler.bodies] == [MESSAGES] * 3

    run(go())


def test_unreachable_peer_is_a_connection_error(kind):
    async def go():
        client = kind.client()
        try:
            with pytest.raises(RPCConnectionError) as info:
                await client.send(kind.dead_address(), encode_batch(MESSAGES), 1.0)
            assert isinstance(info.value, ConnectionError)
        finally:
            await client.close()

    run(go())


def test_slow_peer_is_a_timeout(kind):
    async def go():
        server, handler = kind.server(), Recorder()
        handler.delay = 1.0
        await server.start(handler)
        client = kind.client()
        try:
            with pytest.raises(RPCTimeoutError) as info:
                await client.send(server.address, encode_batch(MESSAGES), 0.1)
            assert isinstance(info.value, TimeoutError)
        finally:
            await client.close()
            await server.close()

    run(go())


def test_wrong_token_is_rejected_and_the_token_is_never_logged(kind, caplog):
    async def go():
        server = kind.server(token=TOKEN)
        await server.start(Recorder())
        good, bad, none = kind.client(TOKEN), kind.client("wrong-token-but-long-enough"), kind.client()
        try:
            await good.send(server.address, encode_batch(MESSAGES), 2.0)
            for client in (bad, none):
                with pytest.raises(RPCAuthError) as info:
                    await client.send(server.address, encode_batch(MESSAGES), 2.0)
                assert not info.value.retryable
        finally:
            for c in (good, bad, none):
                await c.close()
            await server.close()
        if isinstance(server, HTTPTransportServer):
            assert server.auth_rejections == 2

    with caplog.at_level(logging.DEBUG):
        run(go())
    assert TOKEN not in caplog.text and "wrong-token" not in caplog.text


def test_undecodable_body_is_rejected_not_retried(kind):
    async def go():
        server = kind.server()
        await server.start(Recorder())
        client = kind.client()
        try:
            with pytest.raises(RPCRejectedError) as info:
                await client.send(server.address, b"\x01\x00\x00\x00garbage", 2.0)
            assert not info.value.retryable
        finally:
            await client.close()
            await server.close()

    run(go())
