"""Coalescing: many small telemetry tables into few large log entries.

Both ends of the telemetry path use it. A station's ingest actor coalesces the reports
its UAVs send into Arrow tables that it hands to the leader (as ObjectRefs); the leader's
synchronizer coalesces the tables of every station into one Raft entry. A batch is sent
when it holds `max_rows` rows or its oldest table has waited `max_delay` seconds, with at
most `max_in_flight` batches outstanding (pipelining, not a queue behind one slow call).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa


@dataclass(frozen=True)
class CoalescerConfig:
    max_rows: int = 100_000
    max_delay: float = 0.02
    max_in_flight: int = 4

    def __post_init__(self) -> None:
        if self.max_rows < 1:
            raise ValueError(f"max_rows must be positive, got {self.max_rows}")
        if not self.max_delay >= 0:
            raise ValueError(f"max_delay must be >= 0 seconds, got {self.max_delay}")
        if self.max_in_flight < 1:
            raise ValueError(f"max_in_flight must be positive, got {self.max_in_flight}")


class Coalescer:
    """submit(table) resolves with what `send` answered for the batch the table went in."""

    def __init__(self, send: Callable[[pa.Table], Awaitable[Any]], config: CoalescerConfig | None = None) -> None:
        self.config = config or CoalescerConfig()
        self._send = send
        self._tables: list[pa.Table] = []
        self._waiters: list[asyncio.Future[Any]] = []
        self._rows = 0
        self._timer: asyncio.TimerHandle | None = None
        self._slots: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_sent = 0
        self.rows_sent = 0
        self.failures = 0

    @property
    def pending_rows(self) -> int:
        return self._rows

    def submit(self, table: pa.Table) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        if table.num_rows == 0:
            fut.set_result(None)
            return fut
        self._tables.append(table)
        self._waiters.append(fut)
        self._rows += table.num_rows
        if self._rows >= self.config.max_rows:
            self._cut()
        elif self._timer is None:
            self._timer = loop.call_later(self.config.max_delay, self._cut)
        return fut

    def _cut(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._tables:
            return
        tables, waiters = self._tables, self._waiters
        self._tables, self._waiters, self._rows = [], [], 0
        task = asyncio.get_running_loop().create_task(self._deliver(tables, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, tables: list[pa.Table], waiters: list[asyncio.Future[Any]]) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.config.max_in_flight)
        async with self._slots:
            try:
                batch = tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="none")
                answer = await self._send(batch)
            except Exception as exc:
                self.failures += 1
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
                return
            self.batches_sent += 1
            self.rows_sent += batch.num_rows
            for w in waiters:
                if not w.done():
                    w.set_result(answer)

    async def flush(self) -> None:
        """Send what is buffered now and wait for every batch in flight."""
        self._cut()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
