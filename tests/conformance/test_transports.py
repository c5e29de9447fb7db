"""One suite over every transport: in-memory, HTTP and streams (real aiohttp on 127.0.0.1).
A stream hands a batch to its socket and returns: a slow or garbled peer shows there
differently (tests at the end)."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest

from controlplane.raft.codec import decode_batch, encode_batch
from controlplane.raft.messages import AppendEntries, Entry, Heartbeat, RequestVote
from controlplane.rpc.client import Peer, RaftRPCClient
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.errors import RPCAuthError, RPCConnectionError, RPCRejectedError, RPCTimeoutError
from controlplane.rpc.http import HTTPTransport, HTTPTransportServer
from controlplane.rpc.stream import StreamTransport
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


class StreamKind(HTTPKind):
    def client(self, token=None):
        return StreamTransport(RPCConfig(cluster_token=token))


@pytest.fixture(params=["memory", "http", "stream"])
def kind(request):
    return {"memory": MemoryKind, "http": HTTPKind, "stream": StreamKind}[request.param]()


def answers_each_batch(kind):
    if isinstance(kind, StreamKind):
        pytest.skip("a stream does not wait for the peer to take each batch (see the stream tests below)")


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
    answers_each_batch(kind)

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
    answers_each_batch(kind)

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


# --- streams ------------------------------------------------------------------------------


def test_a_stream_pipelines_batches_past_a_slow_peer_and_keeps_their_order():
    async def go():
        server, handler = HTTPTransportServer("127.0.0.1", 0), Recorder()
        handler.delay = 0.2
        await server.start(handler)
        client = StreamTransport(RPCConfig())
        try:
            batches = [encode_batch([Heartbeat(1, 2, 5, n)]) for n in range(5)]
            loop = asyncio.get_running_loop()
            started = loop.time()
            for body in batches:
                await client.send(server.address, body, 2.0)
            assert loop.time() - started < 0.2  # handed over, not waited for one by one
            async with asyncio.timeout(5):
                while len(handler.bodies) < len(batches):
                    await asyncio.sleep(0.01)
            assert handler.bodies == batches
            assert client.streams_opened == 1
        finally:
            await client.close()
            await server.close()

    run(go())


def test_a_stream_sends_its_frames_unmasked_and_the_replica_server_reads_them(monkeypatch):
    """Masking a megabyte entry (and unmasking it on the other side) was over half of the
    stream's CPU: replica streams skip RFC 6455's client mask (rpc/stream.py says why)."""
    from aiohttp._websocket import writer

    masked: list[int] = []
    mask = writer.websocket_mask
    monkeypatch.setattr(writer, "websocket_mask", lambda key, data: (masked.append(len(data)), mask(key, data))[1])

    async def go():
        server, handler = HTTPTransportServer("127.0.0.1", 0), Recorder()
        await server.start(handler)
        client = StreamTransport(RPCConfig(), ping_interval=0.05)
        try:
            body = encode_batch([AppendEntries(1, 2, 3, 0, 0, (Entry(3, 1, bytes(range(256)) * 4096),), 0)])
            await client.send(server.address, body, 2.0)
            await asyncio.sleep(0.2)  # pings go both ways meanwhile, unmasked as well
            await client.send(server.address, body, 2.0)
            async with asyncio.timeout(5):
                while len(handler.bodies) < 2:
                    await asyncio.sleep(0.01)
            assert handler.bodies == [body, body]
            assert masked == []
            assert client.streams_opened == 1  # the server kept the stream: it took every frame
        finally:
            await client.close()
            await server.close()

    run(go())


def test_a_peer_that_never_answers_the_handshake_is_a_timeout():
    async def go():
        accepted: list[asyncio.StreamWriter] = []

        async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.append(writer)  # reads nothing, answers nothing

        listener = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        client = StreamTransport(RPCConfig())
        try:
            with pytest.raises(RPCTimeoutError):
                await client.send(f"http://127.0.0.1:{port}", encode_batch(MESSAGES), 0.3)
            assert accepted
        finally:
            await client.close()
            for writer in accepted:
                writer.close()
            listener.close()

    run(go())


def test_a_garbled_batch_closes_the_stream_and_the_next_send_opens_another(caplog):
    async def go():
        server, handler = HTTPTransportServer("127.0.0.1", 0), Recorder()
        await server.start(handler)
        client = StreamTransport(RPCConfig())
        try:
            await client.send(server.address, b"\x01\x00\x00\x00garbage", 2.0)
            async with asyncio.timeout(5):
                while server.bad_requests < 1 or client._streams:
                    await asyncio.sleep(0.01)
            await client.send(server.address, encode_batch(MESSAGES), 2.0)
            async with asyncio.timeout(5):
                while not handler.bodies:
                    await asyncio.sleep(0.01)
            assert decode_batch(handler.bodies[0]) == MESSAGES
            assert client.streams_opened == 2
        finally:
            await client.close()
            await server.close()

    with caplog.at_level(logging.WARNING):
        run(go())
    assert "undecodable batch" in caplog.text


def test_the_rpc_client_gets_through_a_peer_restarted_under_an_open_stream():
    async def go():
        port = free_port()
        handler = Recorder()
        server = HTTPTransportServer("127.0.0.1", port)
        await server.start(handler)
        client = RaftRPCClient(1, StreamTransport(RPCConfig(retry_delay=0.05)), RPCConfig(retry_delay=0.05))
        peer = Peer(2, server.address)
        try:
            await client.send(peer, MESSAGES)
            async with asyncio.timeout(5):
                while not handler.bodies:
                    await asyncio.sleep(0.01)
            await server.close()
            server = HTTPTransportServer("127.0.0.1", port)
            await server.start(handler)
            await client.send(peer, MESSAGES[:1])  # the old stream is dead: redialled, retried
            async with asyncio.timeout(5):
                while len(handler.bodies) < 2:
                    await asyncio.sleep(0.01)
            assert decode_batch(handler.bodies[-1]) == MESSAGES[:1]
        finally:
            await client.close()
            await server.close()

    run(go())
