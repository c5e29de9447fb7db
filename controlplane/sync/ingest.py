"""TelemetryIngest: a station's entry point for UAV reports. It validates each batch row by
row (bad rows come back with reasons, good rows go on), coalesces the good rows by size
and time, encodes each coalesced batch as a log-entry segment (compressed Arrow IPC) on the
station's own CPU, and forwards it to the leader, which then only joins bytes. Plain
Python; station_ingest.StationIngest is its Ray actor (segments over the leader's stream)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pyarrow as pa

from controlplane.state.telemetry import encode_segment, normalize
from controlplane.sync.coalescer import Coalescer, CoalescerConfig

MAX_REASONS = 100  # per call; the count is always exact


class TelemetryIngest:
    def __init__(
        self,
        station: str,
        forward: Callable[[bytes, int], Awaitable[Any]],
        config: CoalescerConfig | None = None,
    ) -> None:
        """forward(segment, rows) delivers one encoded segment and answers once it is applied."""
        self.station = station
        self._forward = forward
        self.coalescer: Coalescer[pa.Table] = Coalescer(
            self._send,
            lambda t: t.num_rows,
            config or CoalescerConfig(max_size=100_000, max_delay=0.02, max_in_flight=1),
        )
        self.received = 0
        self.accepted = 0
        self.rejected = 0
        self.committed = 0
        self.failed = 0
        self.last_error: str | None = None

    async def report(self, reports: Any, wait: bool = False) -> dict[str, Any]:
        """Take a batch of reports (Arrow table or record batch, pandas DataFrame, list of
        dicts). wait=True returns once the batch is committed and applied (with the apply
        counts of the log entry it went in); otherwise as soon as it is queued."""
        table, rejected = normalize(reports, station=self.station)
        self.received += table.num_rows + len(rejected)
        self.accepted += table.num_rows
        self.rejected += len(rejected)
        answer: dict[str, Any] = {
            "accepted": table.num_rows,
            "rejected": len(rejected),
            "reasons": [r.to_dict() for r in rejected[:MAX_REASONS]],
        }
        fut = self.coalescer.submit(table)
        rows = table.num_rows
        fut.add_done_callback(lambda f: self._count(f, rows))
        if wait:
            answer["applied"] = await asyncio.shield(fut)
        return answer

    def _count(self, fut: asyncio.Future[Any], rows: int) -> None:
        exc = fut.exception() if not fut.cancelled() else asyncio.CancelledError()
        if exc is None:
            self.committed += rows
        else:
            self.failed += rows
            self.last_error = f"{type(exc).__name__}: {exc}"

    async def _send(self, tables: list[pa.Table]) -> Any:
        batch = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
        segment = await asyncio.to_thread(encode_segment, batch)
        return await self._forward(segment, batch.num_rows)

    async def flush(self) -> dict[str, Any]:
        await self.coalescer.flush()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        return {
            "station": self.station,
            "received": self.received,
            "accepted": self.accepted,
            "rejected": self.rejected,
            "committed": self.committed,
            "failed": self.failed,
            "pending": self.coalescer.pending_size,
            "batches_sent": self.coalescer.batches_sent,
            "last_error": self.last_error,
        }
