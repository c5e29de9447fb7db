"""HTTP transport: an aiohttp server per replica and one pooled keep-alive ClientSession per
client. Bodies are the codec's binary batches (never pickle); the cluster token travels as
a bearer header and is compared in constant time. Rejections are counted, never logged
with the token."""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Sequence

import aiohttp
from aiohttp import web

from controlplane.rpc.config import RPCConfig
from controlplane.rpc.errors import (
    RPCAuthError,
    RPCConnectionError,
    RPCError,
    RPCRejectedError,
    RPCServerError,
    RPCTimeoutError,
)
from controlplane.rpc.transport import Answerer, Handler

PATH = "/raft/v1/messages"
CALL_PATH = "/raft/v1/call"  # one message in, its answer back in the response
STREAM_PATH = "/raft/v1/stream"  # a WebSocket of batches, one after another (rpc/stream.py)
RequestHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class HTTPTransportServer:
    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, token: str | None = None, max_body: int = 64 << 20
    ) -> None:
        self.host = host
        self.port = port
        self._token = token
        self.max_body = max_body
        self.auth_rejections = 0
        self.bad_requests = 0
        self._runner: web.AppRunner | None = None
        self._streams: set[web.WebSocketResponse] = set()

    @property
    def address(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(
        self, deliver: Handler, routes: Sequence[web.RouteDef] = (), answer: Answerer | None = None
    ) -> None:
        """Serve Raft messages to `deliver`, calls to `answer` (if given), and any further
        `routes`, all behind the same token. Off loopback there must be a token: anyone who
        reaches the port could otherwise inject Raft messages."""
        if self._token is None and not is_loopback(self.host):
            raise ValueError(f"refusing to serve Raft peers on {self.host} without a cluster token")

        @web.middleware
        async def authenticate(request: web.Request, handler: RequestHandler) -> web.StreamResponse:
            if self._token is not None:
                presented = request.headers.get("Authorization", "")
                if not hmac.compare_digest(presented.encode(), f"Bearer {self._token}".encode()):
                    self.auth_rejections += 1
                    log.warning("rejected a request from %s: missing or wrong cluster token", request.remote)
                    return web.Response(status=401, text="missing or wrong cluster token")
            return await handler(request)

        async def receive(request: web.Request) -> web.Response:
            body = await request.read()
            try:
                await deliver(body)
            except ValueError as exc:
                self.bad_requests += 1
                return web.Response(status=400, text=f"undecodable request: {exc}")
            return web.Response(status=204)

        async def stream(request: web.Request) -> web.WebSocketResponse:
            """Batches in the order sent; the next is read once the last is delivered, so a
            slow replica slows its senders (their socket buffers fill) rather than growing here."""
            ws = web.WebSocketResponse(max_msg_size=self.max_body, autoping=True)
            await ws.prepare(request)
            self._streams.add(ws)
            try:
                await self._read_stream(ws, request, deliver)
            finally:
                self._streams.discard(ws)
            return ws

        async def answer_call(request: web.Request) -> web.Response:
            assert answer is not None
            try:
                reply = await answer(await request.read())
            except ValueError as exc:
                self.bad_requests += 1
                return web.Response(status=400, text=f"undecodable call: {exc}")
            except TimeoutError:
                return web.Response(status=504, text="Raft did not answer in time")
            return web.Response(body=reply, content_type="application/octet-stream")

        app = web.Application(client_max_size=self.max_body, middlewares=[authenticate])
        app.router.add_post(PATH, receive)
        app.router.add_get(STREAM_PATH, stream)
        if answer is not None:
            app.router.add_post(CALL_PATH, answer_call)
        app.router.add_routes(routes)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]

    async def _read_stream(self, ws: web.WebSocketResponse, request: web.Request, deliver: Handler) -> None:
        async for message in ws:
            if message.type is not aiohttp.WSMsgType.BINARY:
                continue
            try:
                await deliver(message.data)
            except ValueError as exc:
                self.bad_requests += 1
                log.warning("closing the Raft stream from %s: undecodable batch: %s", request.remote, exc)
                await ws.close(code=aiohttp.WSCloseCode.INVALID_TEXT, message=b"undecodable batch")
                return

    async def close(self) -> None:
        for ws in list(self._streams):  # else the runner waits out its shutdown timeout on them
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class HTTPTransport:
    def __init__(self, config: RPCConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/octet-stream"}
        if config.cluster_token is not None:
            self._headers["Authorization"] = f"Bearer {config.cluster_token}"

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self.config.pool_size, keepalive_timeout=30)
            self._session = aiohttp.ClientSession(connector=connector)
        return self._session

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        return len(await self._post(address + PATH, address, body, timeout))

    async def call(self, address: str, body: bytes, timeout: float) -> bytes:
        return await self._post(address + CALL_PATH, address, body, timeout)

    async def _post(self, url: str, address: str, body: bytes, timeout: float) -> bytes:
        session = self._get_session()
        try:
            async with session.post(
                url, data=body, headers=self._headers, timeout=aiohttp.ClientTimeout(total=timeout)
            ) as resp:
                text = await resp.read()
                if resp.status in (401, 403):
                    raise RPCAuthError(f"{address} rejected the cluster token")
                if 400 <= resp.status < 500:
                    raise RPCRejectedError(f"{address} answered {resp.status}: {text[:200]!r}")
                if resp.status == 504:
                    raise RPCTimeoutError(f"{address}: Raft did not answer within the server's wait")
                if resp.status >= 500:
                    raise RPCServerError(f"{address} answered {resp.status}")
                return text
        except RPCError:
            raise
        except TimeoutError:
            raise RPCTimeoutError(f"{address} did not answer within {timeout:.3f}s") from None
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise RPCConnectionError(f"cannot reach {address}: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            raise RPCError(f"{address}: {type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
