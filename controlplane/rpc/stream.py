"""Streaming transport: one long-lived WebSocket per peer, batches pipelined on it.

Over HTTP every batch of Raft messages waited for its response before the next could go,
and each cost a request's parsing both ways. Raft needs no per-batch answer (its own
responses travel back as messages on the peer's stream to us, and lost messages are
retransmitted), so here a send returns once the batch is handed to the socket: the next
one goes at once, in order, behind it.

The stream is a WebSocket on the replica's existing HTTP port (`STREAM_PATH`, served by
HTTPTransportServer behind the same cluster token), so a replica still has one address.
Each side dials its own stream to each peer (two per pair, as etcd's rafthttp).

What a send can tell: RPCAuthError when the handshake is refused for the token;
RPCRejectedError when the peer does not serve streams; RPCConnectionError when it cannot be
reached or the stream broke; RPCTimeoutError when the handshake or a full socket buffer
outlasts the timeout. A stream that stalled or broke is dropped, and the next send dials a
new one. A peer that goes silent (host lost, partition) is noticed by WebSocket pings, not
by TCP's retransmission timeout of minutes. A batch the peer cannot decode is counted and
logged there, and the peer closes the stream; the sender cannot be told which batch it was.
Request/response calls (`call`) stay on HTTP.

Frames go unmasked. RFC 6455 has a client mask every frame it sends, so that a proxy between
a browser and a server cannot be made to cache forged responses; a Raft stream goes from one
replica straight to another, behind the cluster token, and masking a megabyte telemetry entry
and unmasking it on the other side was over half of the stream's CPU (`python -m
bench.telemetry_parts`: 97-113 us per 1,000 reports against 40-45 unmasked, both ends). The
replicas' server (aiohttp's reader) takes unmasked frames; the transport tests send through it.
The leader stream (SDK clients and station ingests, behind the same token) does the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import aiohttp

from controlplane.rpc.config import RPCConfig
from controlplane.rpc.errors import RPCAuthError, RPCConnectionError, RPCError, RPCRejectedError, RPCTimeoutError
from controlplane.rpc.http import STREAM_PATH, HTTPTransport

log = logging.getLogger(__name__)

# Seconds between pings on an idle stream; a stream whose pong is missing half as long
# later is closed. Well under a Raft election timeout, so a dead stream does not outlive one.
PING_INTERVAL = 0.5


class StreamTransport(HTTPTransport):
    def __init__(self, config: RPCConfig, ping_interval: float = PING_INTERVAL) -> None:
        super().__init__(config)
        self.ping_interval = ping_interval
        self._streams: dict[str, aiohttp.ClientWebSocketResponse] = {}
        self._dialing: dict[str, asyncio.Lock] = {}
        self._readers: set[asyncio.Task[None]] = set()
        self.streams_opened = 0

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        try:
            async with asyncio.timeout(timeout):
                stream = await self._stream(address)
                try:
                    await stream.send_bytes(body)
                except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
                    await self._drop(address, stream)
                    raise RPCConnectionError(f"stream to {address} broke: {type(exc).__name__}") from None
        except TimeoutError:
            # A handshake or a full buffer that outlasted the timeout: this stream is stuck.
            stuck = self._streams.get(address)
            if stuck is not None:
                await self._drop(address, stuck)
            raise RPCTimeoutError(f"{address} did not take a batch within {timeout:.3f}s") from None
        return 0

    async def _stream(self, address: str) -> aiohttp.ClientWebSocketResponse:
        stream = self._streams.get(address)
        if stream is not None and not stream.closed:
            return stream
        lock = self._dialing.setdefault(address, asyncio.Lock())
        async with lock:
            stream = self._streams.get(address)
            if stream is not None and not stream.closed:
                return stream
            stream = await self._dial(address)
            send_unmasked(stream)
            self._streams[address] = stream
            self.streams_opened += 1
            reader = asyncio.get_running_loop().create_task(self._read_until_closed(address, stream))
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)
            return stream

    async def _dial(self, address: str) -> aiohttp.ClientWebSocketResponse:
        try:
            return await self._get_session().ws_connect(
                address + STREAM_PATH, headers=self._headers, heartbeat=self.ping_interval, autoping=True
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise RPCAuthError(f"{address} rejected the cluster token") from None
            raise RPCRejectedError(f"{address} does not serve Raft streams (answered {exc.status})") from None
        except RPCError:
            raise
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise RPCConnectionError(f"cannot reach {address}: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise RPCError(f"{address}: {type(exc).__name__}: {exc}") from None

    async def _read_until_closed(self, address: str, stream: aiohttp.ClientWebSocketResponse) -> None:
        """The peer sends nothing on our stream but pongs and its close; reading is what
        processes them (and what notices a missing pong)."""
        try:
            async for message in stream:
                if message.type is aiohttp.WSMsgType.ERROR:
                    break
        except Exception:  # whatever broke the stream, the next send dials a new one
            log.debug("stream to %s broke", address, exc_info=True)
        finally:
            if stream.close_code not in (None, 1000):
                log.info("stream to %s closed (code %s)", address, stream.close_code)
            if self._streams.get(address) is stream:
                del self._streams[address]

    async def _drop(self, address: str, stream: aiohttp.ClientWebSocketResponse) -> None:
        if self._streams.get(address) is stream:
            del self._streams[address]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(stream.close(), 0.5)

    async def close(self) -> None:
        for address, stream in list(self._streams.items()):
            await self._drop(address, stream)
        for reader in list(self._readers):
            reader.cancel()
        await super().close()


def send_unmasked(stream: aiohttp.ClientWebSocketResponse) -> None:
    """The stream's frames without RFC 6455's client mask (see the module's docstring). aiohttp
    has no option for it: its writer's flag, checked here so that a change of aiohttp shows."""
    writer = stream._writer
    if not isinstance(getattr(writer, "use_mask", None), bool):
        raise RuntimeError(f"aiohttp {aiohttp.__version__}: a WebSocket writer without use_mask")
    writer.use_mask = False
