"""RaftNode: the asyncio driver around RaftCore. Runs without Ray (tests, tools, simulator).

One task owns the core. Messages, ticks, proposals and reads are queued and taken in by
that task between Ready cycles, so the core is never touched while a Ready is being
persisted, and everything that queued during one fsync goes into the next batch (group
commit). Each cycle: persist, then send, then apply, then advance.

Blocking work (fsync, writing and reading snapshots) goes through `run_blocking`: a worker
thread in production, a step of simulated disk time under the simulator. While a snapshot
of the state machine is being written, committed entries wait in a backlog instead of
changing the state under the writer; Raft itself (heartbeats, votes, replication) goes on.

If the loop fails (a storage error, a bug), the node is failed for good: it answers nothing
as leader, every waiting caller gets NodeFailed, and `on_failure` tells its shell, which
should take the replica down so it restarts from its disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from controlplane import bugs
from controlplane.process_memory import release_free_memory
from controlplane.raft.core import NotLeaderError, RaftConfig, RaftCore, RaftError, Status
from controlplane.raft.messages import (
    ConfChange,
    ConfState,
    Entry,
    EntryKind,
    Message,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
BlockingRunner = Callable[[Callable[[], Any]], Awaitable[Any]]


class StateMachine(Protocol):
    def apply(self, entry: Entry) -> Any:
        """Apply one committed NORMAL entry with data; the result answers its proposer.
        Must not raise: a malformed entry is a deterministic rejection."""

    def snapshot(self) -> bytes:
        """The applied state; called from a worker thread while nothing is applied. A state
        machine may offer prepare_snapshot() -> (() -> bytes) as well: it captures the state
        while nothing is applied, and its result encodes the capture while applies go on."""

    def restore(self, data: bytes) -> None: ...


class NodeStorage(Protocol):
    def bootstrap(self, founders: list[int]) -> None:
        """Give a founding member its first state (the founders' configuration)."""

    def load(self) -> Any:
        """An object with hard_state, snapshot, entries and peers_heard (raft.storage.StoredState,
        persist.RecoveredState). raft.storage.MemoryStorage is the in-memory NodeStorage."""

    def record_peers_heard(self, peers: frozenset[int]) -> None:
        """Durably: every peer this node has had a message from (RaftNode.receive)."""

    def persist(self, rd: Ready) -> None: ...

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Make a snapshot of the applied state durable. Runs in a worker thread, beside
        persist(): it must not touch the log."""

    def compact_log(self, through_index: int) -> None:
        """Entries up to through_index may go (a durable snapshot covers them)."""

    def close(self) -> None: ...


class ProposalDropped(RaftError):
    """The proposal's log slot was taken by another leader's entry: it did not happen."""


class NodeFailed(RaftError):
    """The node's Raft loop stopped on an error; it serves nothing until restarted."""


async def run_in_thread(fn: Callable[[], T]) -> T:
    return await asyncio.to_thread(fn)


@contextlib.contextmanager
def _collector_paused(*, release: bool = True) -> Iterator[None]:
    """Writing or decoding a snapshot of a large fleet makes a million objects; each full
    collection the cyclic GC starts meanwhile walks them all while holding the GIL (0.3 s
    measured at 100k UAVs and missions), which stops the event loop and its heartbeats.
    The objects hold no cycles, so the collector can wait until the job is done. Then the
    job's freed memory goes back to the system."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
        if release:
            release_free_memory()  # the job's temporaries: tens of MB at 100k UAVs


async def run_inline(fn: Callable[[], T]) -> T:
    return fn()


# A WAL write of at most this many bytes of entries runs on the event loop: its fdatasync
# (~0.16 ms here) costs less than the hop to a worker thread and back (~0.4 ms measured).
SMALL_WRITE_BYTES = 64 << 10


async def write_on_the_loop(fn: Callable[[], T]) -> T:
    """A small write, on the loop; first one turn of it, so the messages a leader just handed
    to its transport go out while it writes."""
    await asyncio.sleep(0)
    return fn()


def _without_collector(fn: Callable[[bytes], T], data: bytes) -> T:
    with _collector_paused():
        return fn(data)


@dataclass
class _SnapshotInProgress:
    index: int
    term: int
    conf: ConfState
    captured: bool = False  # the state machine may change again
    data: bytes | None = None  # set once written


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
        run_blocking: BlockingRunner = run_in_thread,
        run_small_write: BlockingRunner | None = None,
        on_failure: Callable[[BaseException], None] | None = None,
    ) -> None:
        """run_blocking runs fsyncs and snapshot work (a worker thread; simulated disk time
        under the simulator); run_small_write runs WAL writes of at most SMALL_WRITE_BYTES of
        entries (default: run_blocking; a replica passes write_on_the_loop)."""
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
        self._run_blocking = run_blocking
        self._run_small_write = run_small_write or run_blocking
        self._on_failure = on_failure
        self.core: RaftCore | None = None
        self.failure: BaseException | None = None
        self._inbox: list[Message] = []
        self.peers_heard: frozenset[int] = frozenset()
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
        # Committed work not yet applied to the state machine: entries and received snapshots.
        self._backlog: list[Entry | Snapshot] = []
        self._snapshotting: _SnapshotInProgress | None = None
        self._blocking_task: asyncio.Task[None] | None = None
        self.applied_index = 0

    # --- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        state = self.storage.load()
        self.peers_heard = state.peers_heard
        started = time.perf_counter()
        kwargs: dict[str, Any] = {} if state.snapshot is None else {"snapshot": state.snapshot}
        self.core = RaftCore(self.config, hard_state=state.hard_state, entries=state.entries, **kwargs)
        if state.snapshot is not None:
            await self._restore(state.snapshot)
            self._last_snapshot_index = state.snapshot.meta.index
        log.info(
            "node %d: recovered: snapshot at %d restored in %.2f s, %d log entries read (%d committed after it)",
            self.id, self.applied_index, time.perf_counter() - started, len(state.entries),
            max(0, state.hard_state.commit - self.applied_index),
        )  # fmt: skip
        # A starting node knows no leader. Instead of a whole election timeout before its first
        # campaign, its clock starts a heartbeat and a tick short of one (etcd's initial election
        # tick advance): a live leader's heartbeat still comes first, and pre-vote keeps a
        # restarted follower's campaign from disrupting that leader.
        self._ticks = self.config.election_ticks - self.config.heartbeat_ticks - 1
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run()), loop.create_task(self._ticker())]
        self._wakeup.set()

    async def stop(self) -> None:
        for t in [*self._tasks, *([self._blocking_task] if self._blocking_task else [])]:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        self._fail_waiters(NotLeaderError(0))
        self.storage.close()

    # --- inputs -----------------------------------------------------------------------------

    def receive(self, message: Message) -> None:
        if self.failure is not None:
            return
        self._inbox.append(message)
        self._wakeup.set()

    async def propose(self, data: bytes, timeout: float = 5.0) -> Any:
        """Replicate a command; returns the state machine's result once applied here."""
        self._check_alive()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._proposals.append((data, fut))
        self._wakeup.set()
        return await asyncio.wait_for(fut, timeout)

    async def propose_many(self, commands: list[bytes], timeout: float = 5.0) -> list[Any]:
        """Replicate commands proposed together; per command the state machine's result once
        applied here, or the exception that ended it (TimeoutError when `timeout` ran out:
        it may still be applied). One wait for all: a task and a timer per command cost
        ~12 us each on the leader's loop."""
        self._check_alive()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in commands]
        self._proposals.extend(zip(commands, futures, strict=True))
        self._wakeup.set()
        try:
            if futures:
                await asyncio.wait(futures, timeout=timeout)
        except asyncio.CancelledError:
            for fut in futures:
                fut.cancel()  # the caller left: commands the loop has not taken are not proposed
            raise
        outcomes: list[Any] = []
        for fut in futures:
            if not fut.done():
                fut.cancel()  # as wait_for would: the loop proposes no cancelled command
                outcomes.append(TimeoutError(f"not applied within {timeout}s"))
            else:
                outcomes.append(fut.exception() or fut.result())
        return outcomes

    async def read_barrier(self, timeout: float = 5.0) -> int:
        """Wait until this node's state machine reflects every write committed before the
        call (ReadIndex); returns the applied index. Then read the state machine."""
        self._check_alive()
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
        self._check_alive()
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def propose(core: RaftCore) -> None:
            if fut.done():
                return  # the caller gave up before the loop got to it: propose nothing
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
        self._check_alive()
        self._admin.append(lambda core: core.transfer_leadership(target))
        self._wakeup.set()

    def status(self) -> Status:
        """The core's status; NodeFailed once the loop has died (a frozen core must not go on
        claiming to lead)."""
        assert self.core is not None, "node not started"
        self._check_alive()
        return self.core.status()

    @property
    def is_leader(self) -> bool:
        if self.core is None or self.failure is not None:
            return False
        return self.core.status().leader_id == self.id

    def _check_alive(self) -> None:
        if self.failure is not None:
            raise NodeFailed(f"node {self.id}'s Raft loop failed: {type(self.failure).__name__}: {self.failure}")

    # --- the loop ---------------------------------------------------------------------------

    async def _ticker(self) -> None:
        while True:
            await self._sleep(self.tick_interval)
            self._ticks += 1
            self._wakeup.set()

    async def _run(self) -> None:
        core = self.core
        assert core is not None
        try:
            while True:
                await self._wakeup.wait()
                self._wakeup.clear()
                self._take_inputs(core)
                while core.has_ready():
                    await self._handle_ready(core, core.ready())
                await self._after_snapshot(core)
                await self._apply_backlog()
                self._maybe_snapshot(core)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Storage failures and bugs must not leave a frozen replica answering as if it
            # were alive: fail, and let the shell take the replica down.
            log.exception("node %d: raft loop failed; stopping", self.id)
            if not bugs.enabled("zombie_leader"):
                self._failed(exc)
            raise

    def _failed(self, exc: BaseException) -> None:
        self.failure = exc
        for t in self._tasks:
            if t is not asyncio.current_task():
                t.cancel()
        if self._blocking_task is not None:
            self._blocking_task.cancel()
        self._fail_waiters(NodeFailed(f"node {self.id}'s Raft loop failed: {type(exc).__name__}: {exc}"))
        if self._on_failure is not None:
            self._on_failure(exc)

    def _fail_waiters(self, exc: Exception) -> None:
        futures = [f for _, f in self._waiting.values()] + list(self._reads.values())
        futures += [f for _, f in self._reads_at] + [f for _, f in self._proposals]
        self._waiting, self._reads_at, self._proposals = {}, [], []
        for fut in futures:
            if not fut.done():
                fut.set_exception(exc)

    def _take_inputs(self, core: RaftCore) -> None:
        ticks, self._ticks = self._ticks, 0
        for _ in range(ticks):
            core.tick()
        inbox, self._inbox = self._inbox, []
        for m in inbox:
            if m.src not in self.peers_heard:
                self._record_heard(m.src)
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

    def _record_heard(self, peer: int) -> None:
        """Durably, before the core sees the peer's first message: once a peer's answer may
        count in a vote or a commit, a founder back without its disk must find that it took
        part (the shells ask the others before bootstrapping an empty directory). A disk that
        fails here fails the loop, as any other write of it does."""
        heard = self.peers_heard | {peer}
        self.storage.record_peers_heard(heard)
        self.peers_heard = heard

    async def _handle_ready(self, core: RaftCore, rd: Ready) -> None:
        early = rd.send_before_persist or bugs.enabled("early_ack")
        if early:
            for m in rd.messages:
                self._send(m)
        if rd.has_state():
            if rd.must_sync():
                small = rd.snapshot is None and sum(len(e.data) for e in rd.entries) <= SMALL_WRITE_BYTES
                await (self._run_small_write if small else self._run_blocking)(lambda: self.storage.persist(rd))
            else:
                self.storage.persist(rd)  # the commit index only: a write, no fsync
        if not early:
            for m in rd.messages:
                self._send(m)
        if rd.role is not Role.LEADER and self._waiting:
            self._abandon_proposals(rd.leader_id)
        if rd.snapshot is not None:
            self._backlog.append(rd.snapshot)
        self._backlog.extend(rd.committed_entries)
        for rs in rd.read_states:
            reader = self._reads.pop(rs.context, None)
            if reader is not None and not reader.done():
                self._reads_at.append((rs.index, reader))
        core.advance(rd)
        if not self._capturing():
            await self._apply_backlog()

    def _capturing(self) -> bool:
        """A snapshot job reads the state machine: nothing may change under it."""
        return self._snapshotting is not None and not self._snapshotting.captured

    async def _apply_backlog(self) -> None:
        if self._capturing():
            return
        while self._backlog:
            item = self._backlog.pop(0)
            if isinstance(item, Snapshot):
                await self._restore(item)
                continue
            self._apply(item)
        self._release_reads()

    def _apply(self, e: Entry) -> None:
        if e.index <= self.applied_index:
            return  # covered by a snapshot installed before it
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

    async def _restore(self, snapshot: Snapshot) -> None:
        prepare = getattr(self.sm, "prepare_restore", None)
        if prepare is not None:
            # Decode off the loop, install on it: reads never see a half-restored state.
            install: Callable[[], None] = await self._run_blocking(lambda: _without_collector(prepare, snapshot.data))
            install()
        else:
            self.sm.restore(snapshot.data)
        self._last_snapshot_index = max(self._last_snapshot_index, snapshot.meta.index)
        self.applied_index = snapshot.meta.index
        self._bytes_since_snapshot = 0

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

    # --- snapshots of our own state ---------------------------------------------------------

    def _maybe_snapshot(self, core: RaftCore) -> None:
        if self._snapshotting is not None or self._backlog:
            return
        applied = self.applied_index
        due = applied - self._last_snapshot_index >= self.snapshot_every
        if applied <= self._last_snapshot_index or not (due or self._bytes_since_snapshot >= self.snapshot_bytes):
            return
        term = core.log.term(applied)
        assert term is not None
        job = self._snapshotting = _SnapshotInProgress(applied, term, core.conf)
        prepare: Callable[[], Callable[[], bytes]] | None = getattr(self.sm, "prepare_snapshot", None)

        def capture() -> Callable[[], bytes]:
            if prepare is not None:
                return prepare()
            data = self.sm.snapshot()
            return lambda: data

        def write(captured: list[Callable[[], bytes]]) -> None:
            data = captured.pop()()  # the capture goes with its encoder
            release_free_memory()  # the job's temporaries: tens of MB at 100k UAVs
            self.storage.save_snapshot(Snapshot(SnapshotMeta(job.index, job.term, job.conf), data))
            job.data = data

        async def run() -> None:
            # Applies stop for the capture only, not for encoding and the disk write (a
            # 100k-UAV fleet: ~0.1 s of capture, then ~0.2 s of encoding and the fsync).
            # The collector waits through the whole job, as it did before applies went on.
            try:
                with _collector_paused(release=False):
                    captured = [await self._run_blocking(capture)]
                    job.captured = True
                    self._bytes_since_snapshot = 0  # what applies from now on, the next one covers
                    self._wakeup.set()
                    await self._run_blocking(lambda: write(captured))
            finally:
                self._wakeup.set()

        self._blocking_task = asyncio.get_running_loop().create_task(run())

    async def _after_snapshot(self, core: RaftCore) -> None:
        job, task = self._snapshotting, self._blocking_task
        if job is None or task is None or not task.done():
            return
        self._snapshotting = self._blocking_task = None
        task.result()  # a failed write fails the loop
        assert job.data is not None
        if job.index > core.log.snapshot.meta.index:
            core.compact(Snapshot(SnapshotMeta(job.index, job.term, job.conf), job.data))
            self.storage.compact_log(core.log.snap_index)
        self._last_snapshot_index = max(self._last_snapshot_index, job.index)
