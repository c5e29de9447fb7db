"""Coalescing: many small items into few large ones.

Both ends of the telemetry path use it. A station's ingest actor coalesces the report
tables its UAVs send into one encoded segment that it hands to the leader (as an
ObjectRef); the leader's synchronizer coalesces the segments of every station into one
Raft entry. The SDK coalesces its clients' calls to a replica (controlplane/replica_calls.py).
A batch is sent when it holds `max_size` (rows at a station, bytes at the
leader) or its oldest item has waited `max_delay` seconds, with at most `max_in_flight`
batches outstanding (pipelining, not a queue behind one slow call).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True)
class CoalescerConfig:
    max_size: int = 100_000
    max_delay: float = 0.02
    max_in_flight: int = 4

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError(f"max_size must be positive, got {self.max_size}")
        if not self.max_delay >= 0:
            raise ValueError(f"max_delay must be >= 0 seconds, got {self.max_delay}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be positive, got {self.max_in_flight}")


class Coalescer(Generic[Item]):
    """submit(item) resolves with what `send` answered for the batch the item went in.

    Batching adapts to load: a batch is cut when it is full or old enough *and* a send slot
    is free; while every slot is busy, items keep joining the next batch, so batches grow
    exactly when the receiver is the bottleneck (group commit, one level up)."""

    def __init__(
        self,
        send: Callable[[list[Item]], Awaitable[Any]],
        size: Callable[[Item], int],
        config: CoalescerConfig | None = None,
    ) -> None:
        self.config = config or CoalescerConfig()
        self._send = send
        self._size = size
        self._items: list[Item] = []
        self._sizes: list[int] = []
        self._waiters: list[asyncio.Future[Any]] = []
        self._pending_size = 0
        self._oldest = 0.0
        self._force = False
        self._wake: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pump: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_sent = 0
        self.size_sent = 0
        self.failures = 0

    @property
    def pending_size(self) -> int:
        return self._pending_size

    def submit(self, item: Item) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        size = self._size(item)
        if size == 0:
            fut.set_result(None)
            return fut
        if not self._items:
            self._oldest = loop.time()
        self._items.append(item)
        self._sizes.append(size)
        self._waiters.append(fut)
        self._pending_size += size
        if self._pump is None or self._pump.done():
            self._wake = asyncio.Event()
            self._slots = asyncio.Semaphore(self.config.max_in_flight)
            self._pump = loop.create_task(self._run())
        assert self._wake is not None
        self._wake.set()
        return fut

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wake is not None and self._slots is not None
        while True:
            if not self._items:
                self._wake.clear()
                await self._wake.wait()
                continue
            wait = self._oldest + self.config.max_delay - loop.time()
            if self._pending_size < self.config.max_size and wait > 0 and not self._force:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), wait)
                continue
            await self._slots.acquire()
            task = loop.create_task(self._deliver(*self._take()))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> tuple[list[Item], list[asyncio.Future[Any]], int]:
        """Whole items from the front, up to max_size (at least one)."""
        size, n = 0, 0
        while n < len(self._items) and (n == 0 or size + self._sizes[n] <= self.config.max_size):
            size += self._sizes[n]
            n += 1
        tables, waiters = self._items[:n], self._waiters[:n]
        del self._items[:n], self._waiters[:n], self._sizes[:n]
        self._pending_size -= size
        if self._items:
            self._oldest = asyncio.get_running_loop().time()
        else:
            self._force = False
        return tables, waiters, size

    async def _deliver(self, items: list[Item], waiters: list[asyncio.Future[Any]], size: int) -> None:
        assert self._slots is not None
        try:
            answer = await self._send(items)
        except Exception as exc:
            self.failures += 1
            for w in waiters:
                if not w.done():
                    w.set_exception(exc)
            return
        finally:
            self._slots.release()
        self.batches_sent += 1
        self.size_sent += size
        for w in waiters:
            if not w.done():
                w.set_result(answer)

    async def flush(self) -> None:
        """Send what is buffered now and wait for every batch in flight."""
        while self._items or self._tasks:
            if self._items and self._wake is not None:
                self._force = True
                self._wake.set()
            await asyncio.sleep(0.001) if not self._tasks else await asyncio.wait(list(self._tasks))

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        if self._pump is not None:
            self._pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pump
