"""StationIngest: a station's telemetry ingest (sync/ingest.py) as a detached Ray actor.

Each coalesced, encoded segment goes to the group's leader over the leader's stream (a binary
frame, answered on the same stream: ~0.3 ms a round trip here), found by asking the
replicas through Ray once and again after a lost leader. A Ray actor call with a `ray.put`
per segment cost ~3 ms of CPU at each end on these machines; it stays the way to a replica
that serves no stream (transport "ray" without HTTP). A segment sent again after a lost answer
is harmless: last-writer-wins counts the repeat as duplicates."""

from __future__ import annotations

import asyncio
from typing import Any

import ray

from controlplane.leader_client import RetryElsewhere
from controlplane.leader_stream.connection import LeaderStream, StreamNotServed, leader_stream
from controlplane.metrics.ray_sink import RaySink
from controlplane.process_memory import freeze_started_process
from controlplane.raft import NotLeaderError
from controlplane.ray_group import answer_while_leading, find_leader, group_replicas, on_station
from controlplane.sync.coalescer import CoalescerConfig
from controlplane.sync.ingest import TelemetryIngest

# The longest a segment waits on the leader for its entry's apply (the Ray path's default).
SEGMENT_TIMEOUT = 10.0


class StationIngest(TelemetryIngest):
    def __init__(self, group: str, station: str, config: CoalescerConfig | None = None, timeout: float = 15.0) -> None:
        super().__init__(station, self._forward, config)
        self.group = group
        self.timeout = timeout
        self._leader: Any = None
        self._stream: LeaderStream | None = None  # the leader's, None: it serves none
        self.forwarded = {"stream": 0, "ray": 0}  # segments applied, by the way they went
        self._reports = RaySink().counter(
            "controlplane_ingest_reports_total",
            "telemetry rows through a station's ingest",
            ("group", "station", "outcome"),
        )
        self._counted = {"accepted": 0, "rejected": 0, "committed": 0, "failed": 0}
        freeze_started_process()  # an actor: this process is the station's ingest, and only that

    async def report(self, reports: Any, wait: bool = False) -> dict[str, Any]:
        try:
            return await super().report(reports, wait)
        finally:
            for outcome, seen in self._counted.items():  # counts of rows, as TelemetryIngest keeps them
                total = getattr(self, outcome)
                if total > seen:
                    self._reports.inc(total - seen, {"group": self.group, "station": self.station, "outcome": outcome})
                    self._counted[outcome] = total

    def stats(self) -> dict[str, Any]:
        return {**super().stats(), "forwarded": dict(self.forwarded)}

    async def _forward(self, segment: bytes, rows: int) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            try:
                if self._leader is None:
                    await self._find_leader(max(0.5, deadline - loop.time()))
                if self._stream is not None:
                    try:
                        wait = max(0.5, min(SEGMENT_TIMEOUT, deadline - loop.time()))
                        applied = await self._stream.submit_segment(segment, wait)
                        self.forwarded["stream"] += 1
                        return applied
                    except StreamNotServed:
                        self._stream = None
                applied = await answer_while_leading(
                    self._leader, self._leader.submit_telemetry.remote([ray.put(segment)])
                )
                self.forwarded["ray"] += 1
                return applied
            except ray.exceptions.RayTaskError as exc:
                if not isinstance(exc.cause, NotLeaderError | TimeoutError):
                    raise
                error: Exception = exc
            except (ray.exceptions.RayActorError, TimeoutError, RetryElsewhere) as exc:
                error = exc
            self._leader = self._stream = None
            if loop.time() > deadline:
                raise TimeoutError(f"telemetry batch not committed within {self.timeout}s: {error}")
            await asyncio.sleep(0.05)

    async def _find_leader(self, timeout: float) -> None:
        replicas = group_replicas(self.group)
        if not replicas:
            raise TimeoutError(f"group {self.group!r} has no replicas")
        leader = replicas[await find_leader(replicas, timeout)]
        endpoint = await leader.client_endpoint.remote()
        self._leader = leader
        self._stream = None if endpoint is None else leader_stream(*endpoint)


IngestActor = ray.remote(StationIngest)


def start_ingest(group: str, station: str, config: CoalescerConfig | None = None) -> Any:
    """Create (or find) the detached telemetry ingest actor of one station."""
    return on_station(IngestActor, f"ingest-{group}-{station}", station).remote(group, station, config)
