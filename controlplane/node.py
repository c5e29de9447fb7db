"""RaftNode: the asyncio driver around RaftCore. Runs without Ray (tests, tools).

One task owns the core. Messages, ticks, proposals and reads are queued and taken in by
that task between Ready cycles, so the core is never touched while a Ready is being
persisted, and everything that queued during one fsync goes into the next batch (group
commit). Each cycle: persist, then send, then apply, then advance.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from controlplane.raft.core import NotLeaderError, RaftConfig, RaftCore, RaftError, Status
from controlplane.raft.messages import (
    ConfChange,
    Entry,
    EntryKind,
    Message,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

log = logging.getLogger(__name__)


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> Any:
        """Apply one committed NORMAL entry with data; the result answers its proposer."""

    def snapshot(self) -> bytes: ...

    def restore(self, data: bytes) -> None: ...


class NodeStorage(Protocol):
    def bootstrap(self, founders: list[int]) -> None:
        """Give a founding member its first state (the founders' configuration)."""

    def load(self) -> Any:
        """An object with hard_state, snapshot and entries (raft.storage.StoredState,
        persist.RecoveredState). raft.storage.MemoryStorage is the in-memory NodeStorage."""

    def persist(self, rd: Ready) -> None: ...

    def save_snapshot(self, snapshot: Snapshot, compact_through: int) -> None: ...

    def close(self) -> None: ...


class ProposalDropped(RaftError):
    """The proposal's log slot was taken by another leader's entry: it did not happen."""


class RaftNode:
    def __init__(
        self,
        config: RaftConfig,
        storage: NodeStorage,
        state_machine: StateMachine,
        send: Callable[[Message], None],
        *,
        tick_interval: float = 0.05,
        snapshot_every: int = 10_000,
        snapshot_bytes: int = 256 << 20,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        persist_in_thread: bool = True,
    ) -> None:
        if tick_interval <= 0:
            raise ValueError(f"tick_interval must be positive, got {tick_interval}")
        if snapshot_every < 1:
            raise ValueError(f"snapshot_every must be positive, got {snapshot_every}")
        if snapshot_bytes < 1:
            raise ValueError(f"snapshot_bytes must be positive, got {snapshot_bytes}")
        self.config = config
        self.id = config.node_id
        self.storage = storage
        self.sm = state_machine
        self._send = send
        self.tick_interval = tick_interval
        self.snapshot_every = snapshot_every
        # Telemetry entries are megabytes each: compact by bytes as well as by count.
        self.snapshot_bytes = snapshot_bytes
        self._bytes_since_snapshot = 0
        self._sleep = sleep
        self._persist_in_thread = persist_in_thread
        self.core: RaftCore | None = None
        self._inbox: list[Message] = []
        self._ticks = 0
        self._proposals: list[tuple[bytes, asyncio.Future[Any]]] = []
        self._admin: list[Callable[[RaftCore], None]] = []
        self._waiting: dict[int, tuple[int, asyncio.Future[Any]]] = {}  # index -> (term, future)
        self._reads: dict[bytes, asyncio.Future[int]] = {}
        self._reads_at: list[tuple[int, asyncio.Future[int]]] = []
        self._read_ids = itertools.count(1)
        self._wakeup = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._last_snapshot_index = 0
        self.applied_index = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        state = self.storage.load()
        kwargs: dict[str, Any] = {} if state.snapshot is None else {"snapshot": state.snapshot}
        self.core = RaftCore(self.config, hard_state=state.hard_state, entries=state.entries, **kwargs)
        if state.snapshot is not None:
            self.sm.restore(state.snapshot.data)
            self._last_snapshot_index = self.applied_index = state.snapshot.meta.index
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._ticker())]
        self._wakeup.set()

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        self._tasks = []
        for fut in [f for _, f in self._waiting.values()] + list(self._reads.values()):
            if not fut.done():
                fut.set_exception(NotLeaderError(0))
        self.storage.close()

    # --- inputs -----------------------------------------------------------------------------

    def receive(self, message: Message) -> None:
        self._inbox.append(message)
        self._wakeup.set()

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        """Replicate a command; returns the state machine's result once applied here."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals.append((data, fut))
        self._wakeup.set()
        return await asyncio.wait_for(fut, timeout)

    async def read_barrier(self, timeout: float = 5.0) -> int:
        """Wait until this node's state machine reflects every write committed before the
        call (ReadIndex); returns the applied index. Then read the state machine."""
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        ctx = f"{self.id}:{next(self._read_ids)}".encode()
        self._reads[ctx] = fut

        def ask(core: RaftCore) -> None:
            try:
                core.read_index(ctx)
            except RaftError as exc:
                self._reads.pop(ctx, None)
                if not fut.done():
                    fut.set_exception(exc)

        self._admin.append(ask)
        self._wakeup.set()
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self._reads.pop(ctx, None)

    async def change_membership(self, change: ConfChange, timeout: float = 5.0) -> None:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def propose(core: RaftCore) -> None:
            try:
                p = core.propose_conf_change(change)
            except RaftError as exc:
                fut.set_exception(exc)
                return
            self._waiting[p.index] = (p.term, fut)

        self._admin.append(propose)
        self._wakeup.set()
        await asyncio.wait_for(fut, timeout)

    def transfer_leadership(self, target: int) -> None:
        self._admin.append(lambda core: core.transfer_leadership(target))
        self._wakeup.set()

    def status(self) -> Status:
        assert self.core is not None, "node not started"
        return self.core.status()

    @property
    def is_leader(self) -> bool:
        return self.core is not None and self.core.status().leader_id == self.id

    # --- the loop ---------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await self._sleep(self.tick_interval)
            self._ticks += 1
            self._wakeup.set()

    async def _run(self) -> None:
        core = self.core
        assert core is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            try:
                self._take_inputs(core)
                while core.has_ready():
                    await self._handle_ready(core, core.ready())
            except asyncio.CancelledError:
                raise
            except Exception:
                # Storage failures and bugs must not silently stall the group: stop serving.
                log.exception("node %d: raft loop failed; stopping", self.id)
                raise

    def _take_inputs(self, core: RaftCore) -> None:
        ticks, self._ticks = self._ticks, 0
        for _ in range(ticks):
            core.tick()
        inbox, self._inbox = self._inbox, []
        for m in inbox:
            core.step(m)
        admin, self._admin = self._admin, []
        for op in admin:
            try:
                op(core)
            except RaftError as exc:
                log.info("node %d: %s", self.id, exc)
        proposals, self._proposals = self._proposals, []
        live = [(d, f) for d, f in proposals if not f.done()]
        if not live:
            return
        try:
            placed = core.propose_many([d for d, _ in live])
        except RaftError as exc:
            for _, f in live:
                f.set_exception(exc)
            return
        for p, (_, f) in zip(placed, live, strict=True):
            self._waiting[p.index] = (p.term, f)

    async def _handle_ready(self, core: RaftCore, rd: Ready) -> None:
        if rd.must_sync():
            if self._persist_in_thread:
                await asyncio.to_thread(self.storage.persist, rd)
            else:
                self.storage.persist(rd)
        for m in rd.messages:
            self._send(m)
        if rd.role is not Role.LEADER and self._waiting:
            self._abandon_proposals(rd.leader_id)
        if rd.snapshot is not None:
            self.sm.restore(rd.snapshot.data)
            self._last_snapshot_index = self.applied_index = rd.snapshot.meta.index
        for e in rd.committed_entries:
            result = self.sm.apply(e) if e.kind is EntryKind.NORMAL and e.data else None
            self._bytes_since_snapshot += len(e.data)
            self.applied_index = e.index
            waiting = self._waiting.pop(e.index, None)
            if waiting is not None and not waiting[1].done():
                term, fut = waiting
                if term == e.term:
                    fut.set_result(result)
                else:
                    fut.set_exception(ProposalDropped(f"entry {e.index} went to term {e.term}, not {term}"))
        for rs in rd.read_states:
            reader = self._reads.pop(rs.context, None)
            if reader is not None and not reader.done():
                self._reads_at.append((rs.index, reader))
        core.advance(rd)
        self._release_reads()
        self._maybe_snapshot(core)

    def _abandon_proposals(self, leader_hint: int) -> None:
        """Deposed: proposals still waiting may or may not commit under the next leader.
        Answer them now (retryable) instead of letting clients wait out their timeouts; a
        client retrying with the same (client, seq) is applied once either way."""
        waiting, self._waiting = self._waiting, {}
        for _, fut in waiting.values():
            if not fut.done():
                fut.set_exception(NotLeaderError(leader_hint))

    def _release_reads(self) -> None:
        still = []
        for index, fut in self._reads_at:
            if index <= self.applied_index:
                if not fut.done():
                    fut.set_result(self.applied_index)
            else:
                still.append((index, fut))
        self._reads_at = still

    def _maybe_snapshot(self, core: RaftCore) -> None:
        applied = core.log.applied
        due = applied - self._last_snapshot_index >= self.snapshot_every
        if applied <= self._last_snapshot_index or not (due or self._bytes_since_snapshot >= self.snapshot_bytes):
            return
        term = core.log.term(applied)
        assert term is not None
        snap = Snapshot(SnapshotMeta(applied, term, core.conf), self.sm.snapshot())
        core.compact(snap)
        self.storage.save_snapshot(snap, compact_through=core.log.snap_index)
        self._last_snapshot_index = applied
        self._bytes_since_snapshot = 0
