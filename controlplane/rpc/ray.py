"""Ray actor-call transport: the address is the peer actor's name; a send is an awaited
call of its `receive(body)` method. Actor handles are looked up once and cached."""

from __future__ import annotations

import asyncio
from typing import Any

import ray
from ray import exceptions as rex

from controlplane.rpc.errors import RPCConnectionError, RPCError, RPCRejectedError, RPCTimeoutError


class RayTransport:
    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._handles: dict[str, Any] = {}

    def forget(self, name: str) -> None:
        """Drop a cached handle (the actor died or moved)."""
        self._handles.pop(name, None)

    def handle(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                raise RPCConnectionError(f"no actor named {name!r} in namespace {self.namespace!r}") from None
            self._handles[name] = handle
        return handle

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        handle = self.handle(address)
        try:
            await asyncio.wait_for(handle.receive.remote(body), timeout)
        except TimeoutError:
            raise RPCTimeoutError(f"actor {address} did not answer within {timeout:.3f}s") from None
        except (rex.RayActorError, rex.ActorUnavailableError) as exc:
            self.forget(address)
            raise RPCConnectionError(f"actor {address} unavailable: {type(exc).__name__}") from None
        except rex.RayTaskError as exc:
            if isinstance(exc.cause, ValueError):
                raise RPCRejectedError(f"actor {address} rejected the request: {exc.cause}") from None
            raise RPCError(f"actor {address} failed: {type(exc.cause).__name__}") from None
        return 0

    async def close(self) -> None:
        self._handles.clear()


class RayResolvedHTTPTransport:
    """HTTP for the traffic, Ray for the phone book: the address is a peer actor's name,
    resolved once to the HTTP endpoint that actor serves (via its `http_address()` method)
    and forgotten when the peer stops answering, so a restarted peer is found again."""

    def __init__(self, namespace: str, http: Any) -> None:
        self.names = RayTransport(namespace)
        self.http = http
        self._urls: dict[str, str] = {}

    async def _resolve(self, name: str, timeout: float) -> str:
        url = self._urls.get(name)
        if url is None:
            handle = self.names.handle(name)
            try:
                url = str(await asyncio.wait_for(handle.http_address.remote(), timeout))
            except TimeoutError:
                raise RPCTimeoutError(f"actor {name} did not give its address within {timeout:.3f}s") from None
            except (rex.RayActorError, rex.ActorUnavailableError, rex.RayTaskError) as exc:
                self.names.forget(name)
                raise RPCConnectionError(f"actor {name} unavailable: {type(exc).__name__}") from None
            self._urls[name] = url
        return url

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        url = await self._resolve(address, timeout)
        try:
            sent: int = await self.http.send(url, body, timeout)
            return sent
        except RPCConnectionError:
            self._urls.pop(address, None)
            self.names.forget(address)
            raise

    async def close(self) -> None:
        await self.http.close()
        await self.names.close()
