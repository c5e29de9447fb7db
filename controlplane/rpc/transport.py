"""The transport interface and an in-memory implementation for tests.

A transport moves one batch of encoded Raft messages to a peer address and reports how it
went by raising one of controlplane.rpc.errors; it never retries (the client does)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from controlplane.rpc.errors import RPCAuthError, RPCConnectionError, RPCRejectedError, RPCTimeoutError

T = TypeVar("T")
# Server side: takes the request body, returns nothing or raises.
Handler = Callable[[bytes], Awaitable[None]]
# Server side of a call: one encoded message in, the encoded answer out.
Answerer = Callable[[bytes], Awaitable[bytes]]


class Transport(Protocol):
    async def send(self, address: str, body: bytes, timeout: float) -> int:
        """Deliver body to the server at address; returns the response size in bytes."""

    async def close(self) -> None: ...


class CallingTransport(Transport, Protocol):
    async def call(self, address: str, body: bytes, timeout: float) -> bytes:
        """One encoded message to the server at address; returns its encoded answer."""


class TransportServer(Protocol):
    @property
    def address(self) -> str: ...

    async def start(self, handler: Handler) -> None: ...

    async def close(self) -> None: ...


class InMemoryNetwork:
    """Addresses to handlers in one process, with faults: down peers refuse connections,
    slow peers exceed timeouts."""

    def __init__(self) -> None:
        self.servers: dict[str, tuple[Handler, str | None]] = {}
        self.answerers: dict[str, Answerer] = {}
        self.down: set[str] = set()
        self.delay: dict[str, float] = {}

    def transport(self, token: str | None = None) -> InMemoryTransport:
        return InMemoryTransport(self, token)

    def server(self, address: str, token: str | None = None) -> InMemoryServer:
        return InMemoryServer(self, address, token)


class InMemoryTransport:
    def __init__(self, network: InMemoryNetwork, token: str | None) -> None:
        self.network = network
        self.token = token

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        handler = self._reach(address)
        await self._within(address, timeout, lambda: handler(body))
        return 0

    async def call(self, address: str, body: bytes, timeout: float) -> bytes:
        self._reach(address)
        answerer = self.network.answerers.get(address)
        if answerer is None:
            raise RPCRejectedError(f"{address} does not answer calls")
        answer: bytes = await self._within(address, timeout, lambda: answerer(body))
        return answer

    def _reach(self, address: str) -> Handler:
        entry = self.network.servers.get(address)
        if entry is None or address in self.network.down:
            raise RPCConnectionError(f"connection refused by {address}")
        handler, token = entry
        if token is not None and token != self.token:
            raise RPCAuthError(f"{address} rejected the cluster token")
        return handler

    async def _within(self, address: str, timeout: float, work: Callable[[], Awaitable[T]]) -> T:
        delay = self.network.delay.get(address, 0.0)
        try:
            async with asyncio.timeout(timeout):
                if delay:
                    await asyncio.sleep(delay)
                return await work()  # created only once the delay is over: never left unawaited
        except TimeoutError:
            raise RPCTimeoutError(f"{address} did not answer within {timeout:.3f}s") from None
        except ValueError as exc:
            raise RPCRejectedError(f"{address} rejected the request: {exc}") from None

    async def close(self) -> None:
        pass


class InMemoryServer:
    def __init__(self, network: InMemoryNetwork, address: str, token: str | None) -> None:
        self.network = network
        self._address = address
        self.token = token

    @property
    def address(self) -> str:
        return self._address

    async def start(self, handler: Handler, answer: Answerer | None = None) -> None:
        self.network.servers[self._address] = (handler, self.token)
        if answer is not None:
            self.network.answerers[self._address] = answer

    async def close(self) -> None:
        self.network.servers.pop(self._address, None)
        self.network.answerers.pop(self._address, None)
