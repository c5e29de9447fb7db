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

    def _handle(self, name: str) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            try:
                handle = ray.get_actor(name, namespace=self.namespace)
            except ValueError:
                raise RPCConnectionError(f"no actor named {name!r} in namespace {self.namespace!r}") from None
            self._handles[name] = handle
        return handle

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        handle = self._handle(address)
        try:
            await asyncio.wait_for(handle.receive.remote(body), timeout)
        except TimeoutError:
            raise RPCTimeoutError(f"actor {address} did not answer within {timeout:.3f}s") from None
        except (rex.RayActorError, rex.ActorUnavailableError) as exc:
            self._handles.pop(address, None)
            raise RPCConnectionError(f"actor {address} unavailable: {type(exc).__name__}") from None
        except rex.RayTaskError as exc:
            if isinstance(exc.cause, ValueError):
                raise RPCRejectedError(f"actor {address} rejected the request: {exc.cause}") from None
            raise RPCError(f"actor {address} failed: {type(exc.cause).__name__}") from None
        return 0

    async def close(self) -> None:
        self._handles.clear()
