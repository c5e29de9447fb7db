"""The transport interface and an in-memory implementation for tests.

A transport moves one batch of encoded Raft messages to a peer address and reports how it
went by raising one of controlplane.rpc.errors; it never retries (the client does)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Protocol

from controlplane.rpc.errors import RPCAuthError, RPCConnectionError, RPCRejectedError, RPCTimeoutError

# Server side: takes the request body (and the token presented), returns nothing or raises.
Handler = Callable[[bytes], Awaitable[None]]


class Transport(Protocol):
    async def send(self, address: str, body: bytes, timeout: float) -> int:
        """Deliver body to the server at address; returns the response size in bytes."""

    async def close(self) -> None: ...


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
        entry = self.network.servers.get(address)
        if entry is None or address in self.network.down:
            raise RPCConnectionError(f"connection refused by {address}")
        handler, token = entry
        if token is not None and token != self.token:
            raise RPCAuthError(f"{address} rejected the cluster token")
        delay = self.network.delay.get(address, 0.0)
        try:
            async with asyncio.timeout(timeout):
                if delay:
                    await asyncio.sleep(delay)
                await handler(body)
        except TimeoutError:
            raise RPCTimeoutError(f"{address} did not answer within {timeout:.3f}s") from None
        except ValueError as exc:
            raise RPCRejectedError(f"{address} rejected the request: {exc}") from None
        return 0

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

    async def start(self, handler: Handler) -> None:
        self.network.servers[self._address] = (handler, self.token)

    async def close(self) -> None:
        self.network.servers.pop(self._address, None)
