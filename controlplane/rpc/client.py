"""RaftRPCClient: sends Raft messages to peers over any Transport, retrying by error type
with exponential backoff and jitter, and reporting every attempt to its hooks.

Three ways to send:
- the specification's request/response face: `RaftRPCClient(discovery, config)`, then
  `await request_vote(target_node_id, candidate_id, term, last_log_index, last_log_term)` and
  `await append_entries(target_node_id, leader_id, term, prev_log_index, prev_log_term,
  entries, leader_commit)` return the peer's answer as a dict, resolving the target through
  discovery (a Peer works too), retried like everything else;
- `await send(peer, messages)` (and install_snapshot, timeout_now): one batch, retried until
  it lands or gives up;
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
import os
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from controlplane.node_ids import raft_id_of
from controlplane.placement.discovery import ServiceDiscovery
from controlplane.raft.codec import decode_batch, encode_batch
from controlplane.raft.messages import (
    AppendEntries,
    AppendEntriesResponse,
    Entry,
    InstallSnapshot,
    Message,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)
from controlplane.rpc.config import RPCConfig
from controlplane.rpc.errors import RPCConnectionError, RPCError, RPCRejectedError
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
        node_id: int | ServiceDiscovery,
        transport: Transport | RPCConfig | None = None,
        config: RPCConfig | None = None,
        *,
        hooks: Sequence[StatsHook] = (),
        rng: random.Random | None = None,
        max_outbox: int = 4096,
        service: str | None = None,
    ) -> None:
        """RaftRPCClient(node_id, transport, config) inside a replica; or, as the specification
        builds it, RaftRPCClient(discovery, config): targets named by node id are found in
        discovery (service `service`, default $DISCOVERY_SERVICE or raft-node, as the nodes
        register) and reached over HTTP, with the cluster token of `config`."""
        self.discovery: ServiceDiscovery | None = None
        self.service = service or os.environ.get("DISCOVERY_SERVICE", "").strip() or "raft-node"
        if isinstance(node_id, ServiceDiscovery):
            if transport is not None and not isinstance(transport, RPCConfig):
                raise TypeError("RaftRPCClient(discovery, config): the second argument is an RPCConfig")
            from controlplane.rpc.http import HTTPTransport

            self.discovery = node_id
            config = transport or config or RPCConfig()
            node_id, transport = 0, HTTPTransport(config)
        if transport is None or isinstance(transport, RPCConfig):
            raise TypeError("RaftRPCClient(node_id, transport, config) needs a Transport")
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
        await self._attempts(peer, messages, self.transport.send, superseded)

    async def call(self, peer: Peer, message: Message) -> Message:
        """One message whose answer comes back in the same exchange (the peer's Raft answers
        it as it would over the network), retried like a batch."""
        exchange = getattr(self.transport, "call", None)
        if exchange is None:
            raise RPCRejectedError(f"{type(self.transport).__name__} does not carry request/response calls")
        reply = await self._attempts(peer, [message], exchange, None)
        answers = decode_batch(reply)
        if len(answers) != 1:
            raise RPCError(f"{peer.address} answered {len(answers)} messages to one call")
        return answers[0]

    async def _attempts(
        self,
        peer: Peer,
        messages: Sequence[Message],
        exchange: Callable[[str, bytes, float], Any],
        superseded: Callable[[], bool] | None,
    ) -> Any:
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
                result = await exchange(peer.address, body, cfg.timeout)
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
            size = result if isinstance(result, int) else len(result)
            self._record(peer, method, attempt, "ok", None, started, len(body), size, entries, term)
            self.stats.requests_finished(ok=True)
            return result

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

    async def _target(self, target: Peer | str | int) -> Peer:
        """A Peer as it is; a node id (the specification's "node_1", or a Raft id) through discovery."""
        if isinstance(target, Peer):
            return target
        if self.discovery is None:
            raise TypeError("a target named by node id needs a client built as RaftRPCClient(discovery, config)")
        for node in await self.discovery.discover(self.service):
            if node.node_id == str(target) or raft_id_of(node.node_id) == target:
                return Peer(raft_id_of(node.node_id), f"http://{node.address}:{node.port}")
        raise RPCConnectionError(f"discovery lists no {self.service!r} node {target!r}")

    async def request_vote(
        self,
        target: Peer | str | int,
        candidate_id: str | int,
        term: int,
        last_log_index: int,
        last_log_term: int,
        pre_vote: bool = False,
    ) -> dict[str, Any]:
        """The peer's vote: {"term", "vote_granted"}. A real RequestVote: a term above the
        group's disrupts it as a candidate's would (pre_vote=True asks without that)."""
        peer = await self._target(target)
        candidate = raft_id_of(candidate_id) if isinstance(candidate_id, str) else candidate_id
        msg = RequestVote(candidate, peer.node_id, term, last_log_index, last_log_term, pre_vote)
        answer = await self.call(peer, msg)
        if not isinstance(answer, RequestVoteResponse):
            raise RPCError(f"{peer.address} answered a vote request with {type(answer).__name__}")
        return {"term": answer.term, "vote_granted": answer.granted, "node_id": answer.src}

    async def append_entries(
        self,
        target: Peer | str | int,
        leader_id: str | int,
        term: int,
        prev_log_index: int,
        prev_log_term: int,
        entries: Sequence[Entry],
        leader_commit: int,
    ) -> dict[str, Any]:
        """The peer's answer: {"term", "success", "match_index"} (on a refusal, the index it
        refused and a hint to back up to)."""
        peer = await self._target(target)
        leader = raft_id_of(leader_id) if isinstance(leader_id, str) else leader_id
        msg = AppendEntries(leader, peer.node_id, term, prev_log_index, prev_log_term, tuple(entries), leader_commit)
        answer = await self.call(peer, msg)
        if not isinstance(answer, AppendEntriesResponse):
            raise RPCError(f"{peer.address} answered AppendEntries with {type(answer).__name__}")
        return {
            "term": answer.term,
            "success": answer.success,
            "match_index": answer.index,
            "hint_index": answer.hint_index,
            "node_id": answer.src,
        }

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
