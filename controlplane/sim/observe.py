"""Where the simulator watches the production replica: thin pass-throughs around its storage
and its state machine that report to the checkers and change nothing.

- ObservedStorage: every Ready as it is persisted (log matching, election safety, leader
  completeness), what was durable when the last fsync returned, and what comes back on a
  restart (durability: nothing synced may be missing).
- ObservedStateMachine: every applied entry and its answer (state machine safety,
  exactly-once: no (client, seq) applied twice), and every snapshot it saves: the state as
  it was captured, at or below the snapshot's index (applies resume while it is encoded).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from controlplane.node import RaftNode
from controlplane.persist import DiskStorage, RecoveredState
from controlplane.raft.messages import Entry, EntryKind, Ready, Role, Snapshot
from controlplane.sim.invariants import InvariantChecker
from controlplane.state.fleet import FleetState


@dataclass(frozen=True)
class Durable:
    """What a replica had made durable when its last fsync returned."""

    term: int
    vote: int
    last_index: int  # of its log (or its snapshot, when the log is empty)
    last_term: int

    def problem_with(self, state: RecoveredState, *, log: bool = True) -> str | None:
        """Why the recovered state lacks something this replica had synced (None: it has it).
        log=False: a truncation or snapshot install was under way, which may legitimately
        have replaced synced entries; term and vote must survive regardless."""
        hs = state.hard_state
        if hs.term < self.term or (hs.term == self.term and self.vote and hs.vote != self.vote):
            return f"synced term {self.term} vote {self.vote}, recovered term {hs.term} vote {hs.vote}"
        if not log:
            return None
        if state.snapshot is not None and state.snapshot.meta.index >= self.last_index:
            return None
        terms = {e.index: e.term for e in state.entries}
        if self.last_index and terms.get(self.last_index) != self.last_term:
            return (
                f"synced entry {self.last_index} (term {self.last_term}) is gone: recovered "
                f"{len(state.entries)} entries up to {state.entries[-1].index if state.entries else 0}"
            )
        return None


class ObservedStorage:
    def __init__(
        self,
        inner: DiskStorage,
        node_id: int,
        checker: InvariantChecker,
        node: Callable[[], RaftNode | None],
        on_durable: Callable[[Durable | None], None],
        before_persist: Callable[[Ready], None] = lambda rd: None,
        on_snapshot_saved: Callable[[Snapshot], None] = lambda snapshot: None,
    ) -> None:
        self._before_persist = before_persist
        self._on_snapshot_saved = on_snapshot_saved
        self.inner = inner
        self.node_id = node_id
        self.checker = checker
        self._node = node
        self._on_durable = on_durable
        self._leader_term = 0
        self.recovered: RecoveredState | None = None
        self._hard = (0, 0)
        self._last = (0, 0)

    def bootstrap(self, founders: list[int]) -> None:
        self.inner.bootstrap(founders)

    def load(self) -> RecoveredState:
        state = self.inner.load()
        self.recovered = state
        self._hard = (state.hard_state.term, state.hard_state.vote)
        if state.entries:
            self._last = (state.entries[-1].index, state.entries[-1].term)
        elif state.snapshot is not None:
            self._last = (state.snapshot.meta.index, state.snapshot.meta.term)
        return state

    def record_peers_heard(self, peers: frozenset[int]) -> None:
        self.inner.record_peers_heard(peers)

    def persist(self, rd: Ready) -> None:
        node = self._node()
        core = node.core if node is not None else None
        prev_term = None
        if rd.entries and core is not None:
            prev_term = core.log.term(rd.entries[0].index - 1)
            if prev_term is None and rd.snapshot is not None and rd.entries[0].index == rd.snapshot.meta.index + 1:
                prev_term = rd.snapshot.meta.term
        self._before_persist(rd)
        rewrites = rd.snapshot is not None or (bool(rd.entries) and rd.entries[0].index <= self._last[0])
        if rewrites:
            # A truncation or an installed snapshot replaces synced entries: a crash in the
            # middle may keep either log, and dropping those entries is what Raft asked.
            self._on_durable(None)
        self.inner.persist(rd)
        if rd.hard_state is not None:
            self._hard = (rd.hard_state.term, rd.hard_state.vote)
        if rd.snapshot is not None:
            self._last = (rd.snapshot.meta.index, rd.snapshot.meta.term)
        if rd.entries:
            self._last = (rd.entries[-1].index, rd.entries[-1].term)
        if rd.must_sync():
            self._on_durable(Durable(self._hard[0], self._hard[1], *self._last))
        self.checker.on_persisted(self.node_id, rd.entries, prev_term)
        if rd.role is Role.LEADER and core is not None:
            if self._leader_term != rd.term:
                self._leader_term = rd.term
                self.checker.on_became_leader(self.node_id, core)
            self.checker.on_leader(self.node_id, rd.term)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.inner.save_snapshot(snapshot)
        self._on_snapshot_saved(snapshot)

    def compact_log(self, through_index: int) -> None:
        self.inner.compact_log(through_index)

    def close(self) -> None:
        self.inner.close()


class ExactlyOnce:
    """Every (client, seq) applied at most once: its first applying answer names its index,
    and every later answer for it must be that same answer."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, int], dict[str, Any]] = {}
        self.applied: set[tuple[str, int]] = set()
        self.violations: list[str] = []

    def on_answer(self, node_id: int, entry: Entry, answer: Any) -> None:
        if not entry.data.startswith(b"{") or not isinstance(answer, dict):
            return
        cmd = json.loads(entry.data)
        client, seq = cmd.get("client"), cmd.get("seq")
        if not isinstance(client, str) or not isinstance(seq, int):
            return
        key = (client, seq)
        if answer.get("ok") and answer.get("index") == entry.index:
            self.applied.add(key)
        first = self.first.setdefault(key, answer)
        if answer.get("ok") and first.get("ok") and first.get("index") != answer.get("index"):
            self.violations.append(
                f"exactly-once: node {node_id} applied {client}/{seq} at index {answer.get('index')}, "
                f"it was applied at {first.get('index')} already"
            )


class ObservedStateMachine:
    def __init__(
        self,
        inner: Any,
        node_id: int,
        checker: InvariantChecker,
        exactly_once: ExactlyOnce,
        term: Callable[[], int],
        state: Callable[[], FleetState],
    ) -> None:
        self.term = term
        self.state = state
        self._captured: tuple[int, str] | None = None  # the state's applied index and digest
        self.inner = inner
        self.node_id = node_id
        self.checker = checker
        self.exactly_once = exactly_once

    def apply(self, entry: Entry) -> Any:
        answer = self.inner.apply(entry)
        self.checker.on_applied(self.node_id, (entry,), self.term())
        if entry.kind is EntryKind.NORMAL:
            self.exactly_once.on_answer(self.node_id, entry, answer)
        return answer

    def snapshot(self) -> bytes:
        data: bytes = self.inner.snapshot()
        return data

    def prepare_snapshot(self) -> Callable[[], bytes]:
        state = self.state()
        self._captured = (state.applied_index, state.digest())
        encode: Callable[[], bytes] = self.inner.prepare_snapshot()
        return encode

    def check_saved(self, snapshot: Snapshot) -> None:
        """The snapshot a node saved holds the state it captured, and nothing applied after
        the snapshot's index."""
        saved = FleetState()
        saved.restore(snapshot.data)
        index = snapshot.meta.index
        if saved.applied_index > index:
            self.checker.fail(
                f"snapshot: node {self.node_id} saved a snapshot at index {index} holding entry {saved.applied_index}"
            )
        elif self._captured is None or self._captured != (saved.applied_index, saved.digest()):
            self.checker.fail(
                f"snapshot: node {self.node_id} saved a state at index {index} other than the one it captured"
            )

    def restore(self, data: bytes) -> None:
        self.inner.restore(data)

    def prepare_restore(self, data: bytes) -> Callable[[], None]:
        install: Callable[[], None] = self.inner.prepare_restore(data)
        return install
