"""The client's side of the leader stream: one WebSocket per process, event loop and
replica address, shared by every SDK client of the process (each keeps its own session and
seq). Requests made in the same turn of the event loop leave as one frame; answers come
back by id, in whatever order the replica knows them.

What a caller can be told: the answer; RetryElsewhere when the replica cannot be reached,
the stream broke, or no answer came in time (the outcome is unknown: resend the same bytes,
which their (client, seq) makes safe); ControlPlaneError when the replica refuses the
cluster token; StreamNotServed when the replica serves no leader stream (the caller falls
back to whatever else it has); ValueError for a request the replica calls malformed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from controlplane import fastjson
from controlplane.leader_client import ControlPlaneError, RetryElsewhere
from controlplane.leader_stream.wire import PATH, encode, encode_segment, unencodable
from controlplane.rpc.stream import send_unmasked
from controlplane.standalone.wire import decode_error

log = logging.getLogger(__name__)

# A leader that went silent (its host lost or cut off: no reset arrives) is given up at most
# ~0.75 s after its last word, about when the others have elected a new one.
PING_INTERVAL = 0.5
CONNECT_TIMEOUT = 2.0
# A request without an answer is given up at most this long after its time: one timer per
# stream looks, not one per request (a timer per request was ~10 % of a reading client's CPU).
SWEEP_INTERVAL = 0.1


class StreamNotServed(ControlPlaneError):
    """The replica does not serve the leader stream."""


class _NoAnswer(Exception):
    """No answer to a request within its time."""


class LeaderStream:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[tuple[str, Any]]] = {}
        self._give_up_at: dict[int, float] = {}  # per pending request, in the loop's time
        self._sweeping: asyncio.TimerHandle | None = None
        self._outgoing: list[list[Any]] = []
        self._flushing = False
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._session: aiohttp.ClientSession | None = None
        self._opening: asyncio.Lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self.frames_sent = 0
        self.requests_sent = 0

    @property
    def disposable(self) -> bool:
        """Not connected, not connecting, nobody waiting: forgetting it loses nothing."""
        return (self._ws is None or self._ws.closed) and not self._pending and not self._opening.locked()

    async def propose(self, command: bytes, timeout: float) -> tuple[str, Any]:
        """("ok", the state machine's answer) or ("retry", why)."""
        return await self._ask(["propose", command.decode(), min(max(timeout, 0.05), 60.0)], timeout)

    async def query(self, name: str, args: dict[str, Any] | None, consistency: str, timeout: float) -> Any:
        """The query's answer; its own CommandError as it is."""
        kind, value = await self._ask(["query", name, args, consistency], timeout)
        if kind == "retry":
            raise RetryElsewhere(f"{self.url}: {value}")
        if kind == "error":
            raise decode_error(value)
        return value

    async def submit_segment(self, segment: bytes, timeout: float) -> Any:
        """A station's telemetry segment, in a binary frame of its own: the apply counts of
        the entry it went in once applied on the leader."""
        timeout = min(max(timeout, 0.05), 60.0)
        kind, value = await self._answer(lambda rid: self._send_segment(rid, timeout, segment), timeout)
        if kind == "retry":
            raise RetryElsewhere(f"{self.url}: {value}")
        return value

    async def _ask(self, request: list[Any], timeout: float) -> tuple[str, Any]:
        return await self._answer(lambda rid: self._queue([rid, *request]), timeout)

    async def _answer(self, send: Callable[[int], None], timeout: float) -> tuple[str, Any]:
        """Send a request under a new id; its answer, matched by that id."""
        loop = asyncio.get_running_loop()
        # A little past the replica's own deadline, so its "retry" arrives first. Not wait_for:
        # that wraps the answer in a second future and wakes the caller a turn of the loop later.
        give_up_at = loop.time() + timeout + 0.5
        if self._ws is None or self._ws.closed:
            await self._open(min(timeout, CONNECT_TIMEOUT))
        rid = next(self._ids)
        answer: asyncio.Future[tuple[str, Any]] = loop.create_future()
        self._pending[rid] = answer
        send(rid)
        self._give_up_at[rid] = give_up_at
        if self._sweeping is None:
            self._sweeping = loop.call_later(SWEEP_INTERVAL, self._sweep)
        try:
            kind, value = await answer
        except _NoAnswer:
            raise RetryElsewhere(f"{self.url} did not answer within {timeout:.1f}s") from None
        finally:
            self._pending.pop(rid, None)
            self._give_up_at.pop(rid, None)
        if kind == "invalid":
            raise ValueError(f"{self.url} refused the request: {value}")
        return kind, value

    def _queue(self, request: list[Any]) -> None:
        """Requests queued in the same turn of the loop leave as one frame."""
        self._outgoing.append(request)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _send_segment(self, rid: int, timeout: float, segment: bytes) -> None:
        ws = self._ws
        if ws is None or ws.closed:
            self._fail([[rid]], "the stream closed")
            return
        self._write(ws.send_bytes(encode_segment(rid, timeout, segment)), [[rid]])

    def _sweep(self) -> None:
        """Give up the requests whose time has passed; look again while any is pending."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for rid, give_up_at in list(self._give_up_at.items()):
            if give_up_at <= now:
                answer = self._pending.get(rid)
                if answer is not None and not answer.done():
                    answer.set_exception(_NoAnswer())
        self._sweeping = loop.call_later(SWEEP_INTERVAL, self._sweep) if self._give_up_at else None

    def _flush(self) -> None:
        self._flushing = False
        batch, self._outgoing = self._outgoing, []
        ws = self._ws
        if not batch or ws is None:
            return
        if ws.closed:
            self._fail(batch, "the stream closed")
            return
        try:
            frame = encode(batch)
        except (TypeError, ValueError):
            batch = self._without_unencodable(batch)
            if not batch:
                return
            frame = encode(batch)
        self._write(ws.send_str(frame), batch)

    def _write(self, sending: Awaitable[None], batch: list[list[Any]]) -> None:
        """A frame on its way; its requests' callers are told if it never gets there."""
        self.frames_sent += 1
        self.requests_sent += len(batch)
        future = asyncio.ensure_future(sending)
        future.add_done_callback(lambda sent: self._failed_to_send(sent, batch))

    def _without_unencodable(self, batch: list[list[Any]]) -> list[list[Any]]:
        """The requests that JSON can carry; each other one's caller is told why not."""
        kept = []
        for request in batch:
            why = unencodable(request)
            if why is None:
                kept.append(request)
                continue
            waiting = self._pending.get(request[0])
            if waiting is not None and not waiting.done():
                waiting.set_exception(ValueError(f"the request cannot travel as JSON: {why}"))
        return kept

    def _failed_to_send(self, sent: asyncio.Future[None], batch: list[list[Any]]) -> None:
        if sent.cancelled() or sent.exception() is not None:
            self._fail(batch, "the stream broke")

    def _fail(self, batch: list[list[Any]], why: str) -> None:
        for rid, *_ in batch:
            waiting = self._pending.get(rid)
            if waiting is not None and not waiting.done():
                waiting.set_exception(RetryElsewhere(f"{self.url}: {why}"))

    async def _open(self, timeout: float) -> None:
        if self._ws is not None and not self._ws.closed:
            return
        async with self._opening:
            if self._ws is not None and not self._ws.closed:
                return
            session = aiohttp.ClientSession()  # one per connection, closed with it
            try:
                self._ws = await self._connect(session, timeout)
            except BaseException:
                await session.close()
                raise
            send_unmasked(self._ws)  # a station's megabyte segments unmasked: see rpc/stream.py
            self._session = session
            self._reader = asyncio.get_running_loop().create_task(self._read(self._ws))

    async def _connect(self, session: aiohttp.ClientSession, timeout: float) -> aiohttp.ClientWebSocketResponse:
        try:
            return await asyncio.wait_for(
                session.ws_connect(
                    self.url + PATH, headers=self._headers, heartbeat=PING_INTERVAL, max_msg_size=64 << 20
                ),
                timeout,
            )
        except aiohttp.WSServerHandshakeError as exc:
            if exc.status in (401, 403):
                raise ControlPlaneError(f"{self.url} refused the cluster token") from None
            if exc.status == 404:
                raise StreamNotServed(f"{self.url} serves no leader stream") from None
            raise RetryElsewhere(f"{self.url} answered {exc.status} to the stream's handshake") from None
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise RetryElsewhere(f"cannot reach {self.url}: {type(exc).__name__}") from exc

    async def _read(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        try:
            async for message in ws:
                if message.type is not aiohttp.WSMsgType.TEXT:
                    continue
                for rid, kind, value in fastjson.loads(message.data):
                    waiting = self._pending.get(rid)
                    if waiting is not None and not waiting.done():
                        waiting.set_result((kind, value))
        except (ValueError, TypeError) as exc:
            log.warning("closing the leader stream to %s: unreadable answer (%s)", self.url, exc)
        finally:
            self._fail([[rid] for rid in list(self._pending)], f"the stream closed (code {ws.close_code})")
            await ws.close()
            if self._session is not None and self._ws is ws:
                await self._session.close()  # the next call opens another
                self._session = None

    async def close(self) -> None:
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
        if self._session is not None:
            await self._session.close()


_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, str | None], LeaderStream]] = (
    weakref.WeakKeyDictionary()
)


def leader_stream(url: str, token: str | None) -> LeaderStream:
    """The running loop's stream to `url`, shared by every client in the process."""
    loop = asyncio.get_running_loop()
    streams = _per_loop.get(loop)
    if streams is None:  # not setdefault alone: it would build an empty dict on every request
        streams = _per_loop.setdefault(loop, {})
    key = (url, token)
    stream = streams.get(key)
    if stream is None or stream.disposable:
        for known, other in list(streams.items()):  # a restarted replica listens on a new port
            if other.disposable:
                del streams[known]
        stream = streams[key] = LeaderStream(url, token)
    return stream


def streams_in_this_loop() -> list[LeaderStream]:
    return list(_per_loop.get(asyncio.get_running_loop(), {}).values())
