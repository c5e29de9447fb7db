"""RaftRPCClient: sends Raft messages to peers over any Transport, retrying by error type
with exponential backoff and jitter, and reporting every attempt to its hooks.

Two ways to send:
- `await send(peer, messages)` (and the seed's named calls: request_vote, append_entries,
  install_snapshot, timeout_now): one batch, retried until it lands or gives up;
- `post(peer, message)`: fire and forget, for the node driver. Each peer has an outbox
  drained by one task; whatever queued while a batch was in flight goes out as the next
  batch. A batch whose retry comes due while newer messages wait is dropped instead of
  retried: Raft tolerates lost messages, and a stale heartbeat or append must never hold
  up a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.raft.codec import encode_batch
from controlplane.raft.messages import (
    AppendEntries,
    Entry,
    InstallSnapshot,
    Message,
    RequestVote,
    SnapshotMeta,
    TimeoutNow,
)
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.errors import RPCError
from controlplane.rpc.stats import AttemptRecord, StatsAggregator, StatsHook
from controlplane.rpc.transport import Transport

log = logging.getLogger(__name__)

_METHOD_NAMES = {
    "RequestVote": "request_vote",
    "RequestVoteResponse": "request_vote_response",
    "AppendEntries": "append_entries",
    "AppendEntriesResponse": "append_entries_response",
    "Heartbeat": "heartbeat",
    "HeartbeatResponse": "heartbeat_response",
    "InstallSnapshot": "install_snapshot",
    "InstallSnapshotResponse": "install_snapshot_response",
    "TimeoutNow": "timeout_now",
    "ReadIndexRequest": "read_index",
    "ReadIndexResponse": "read_index_response",
}


@dataclass(frozen=True, slots=True)
class Peer:
    node_id: int
    address: str


class Superseded(RPCError):
    """A failed batch was dropped because newer messages for the same peer are waiting."""

    retryable = False
    kind = "superseded"


class RaftRPCClient:
    def __init__(
        self,
        node_id: int,
        transport: Transport,
        config: RPCConfig | None = None,
        *,
        hooks: Sequence[StatsHook] = (),
        rng: random.Random | None = None,
        max_outbox: int = 4096,
    ) -> None:
        self.node_id = node_id
        self.source = str(node_id)
        self.transport = transport
        self.config = config or RPCConfig()
        self.stats = StatsAggregator()
        self.hooks: list[StatsHook] = [self.stats, *hooks]
        self._rng = rng or random.Random()
        self.max_outbox = max_outbox
        self._outboxes: dict[Peer, deque[Message]] = {}
        self._wakeups: dict[Peer, asyncio.Event] = {}
        self._workers: dict[Peer, asyncio.Task[None]] = {}
        self.dropped = 0

    # --- one batch, retried ---------------------------------------------------------------

    async def send(self, peer: Peer, messages: Sequence[Message], superseded: Callable[[], bool] | None = None) -> None:
        if not messages:
            return
        body = encode_batch(tuple(messages))
        method = _METHOD_NAMES[type(messages[0]).__name__] if len(messages) == 1 else "batch"
        entries = sum(len(m.entries) for m in messages if isinstance(m, AppendEntries))
        term = max(m.term for m in messages)
        cfg = self.config
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                response_bytes = await self.transport.send(peer.address, body, cfg.timeout)
            except RPCError as exc:
                self._record(peer, method, attempt, exc.kind, type(exc).__name__, started, len(body), 0, entries, term)
                if not exc.retryable or attempt > cfg.max_retries:
                    self.stats.requests_finished(ok=False)
                    raise
                await asyncio.sleep(cfg.delay_before(attempt, self._rng.random()))
                if superseded is not None and superseded():
                    self.stats.requests_finished(ok=False)
                    raise Superseded(f"dropped a failed {method} to {peer.node_id}: newer messages wait") from exc
                continue
            self._record(peer, method, attempt, "ok", None, started, len(body), response_bytes, entries, term)
            self.stats.requests_finished(ok=True)
            return

    def _record(
        self,
        peer: Peer,
        method: str,
        attempt: int,
        outcome: str,
        error_type: str | None,
        started: float,
        request_bytes: int,
        response_bytes: int,
        entries: int,
        term: int,
    ) -> None:
        record = AttemptRecord(
            time.time(),
            self.source,
            str(peer.node_id),
            method,
            attempt,
            outcome,
            error_type,
            (time.perf_counter() - started) * 1000,
            request_bytes,
            response_bytes,
            entries,
            term,
        )
        for hook in self.hooks:
            try:
                hook(record)
            except Exception:  # a broken hook must not break replication
                log.exception("RPC stats hook %r failed", hook)

    # --- the seed's named calls -------------------------------------------------------------

    async def request_vote(
        self,
        target: Peer,
        candidate_id: int,
        term: int,
        last_log_index: int,
        last_log_term: int,
        pre_vote: bool = False,
    ) -> None:
        await self.send(
            target, [RequestVote(candidate_id, target.node_id, term, last_log_index, last_log_term, pre_vote)]
        )

    async def append_entries(
        self,
        target: Peer,
        term: int,
        prev_log_index: int,
        prev_log_term: int,
        entries: Sequence[Entry],
        leader_commit: int,
    ) -> None:
        msg = AppendEntries(
            self.node_id, target.node_id, term, prev_log_index, prev_log_term, tuple(entries), leader_commit
        )
        await self.send(target, [msg])

    async def install_snapshot(
        self, target: Peer, term: int, meta: SnapshotMeta, offset: int, chunk: bytes, done: bool
    ) -> None:
        await self.send(target, [InstallSnapshot(self.node_id, target.node_id, term, meta, offset, chunk, done)])

    async def timeout_now(self, target: Peer, term: int) -> None:
        await self.send(target, [TimeoutNow(self.node_id, target.node_id, term)])

    def get_statistics(self) -> dict[str, Any]:
        stats = self.stats.snapshot()
        stats["dropped"] = self.dropped
        return stats

    # --- fire and forget, for the node driver ---------------------------------------------

    def post(self, peer: Peer, message: Message) -> None:
        box = self._outboxes.get(peer)
        if box is None:
            box = self._outboxes[peer] = deque()
            self._wakeups[peer] = asyncio.Event()
            self._workers[peer] = asyncio.get_running_loop().create_task(self._drain(peer))
        if len(box) >= self.max_outbox:
            box.popleft()  # a peer that is long gone must not grow our memory
            self.dropped += 1
        box.append(message)
        self._wakeups[peer].set()

    async def _drain(self, peer: Peer) -> None:
        box, wakeup = self._outboxes[peer], self._wakeups[peer]
        while True:
            await wakeup.wait()
            wakeup.clear()
            while box:
                batch = list(box)
                box.clear()
                try:
                    await self.send(peer, batch, superseded=lambda: bool(box))
                except RPCError as exc:
                    self.dropped += len(batch)
                    log.debug("dropped %d messages to %s: %s", len(batch), peer.node_id, exc)

    async def close(self) -> None:
        for task in self._workers.values():
            task.cancel()
        for task in self._workers.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers.clear()
        await self.transport.close()
