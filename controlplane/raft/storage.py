"""What a Raft replica keeps durable, as three small interfaces, each with an in-memory
implementation for tests. The core never calls these: its driver does, between ready() and
advance(). File-backed versions live in controlplane.persist."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from controlplane.raft.core import initial_entries
from controlplane.raft.messages import Entry, HardState, Ready, Snapshot


class LogStore(Protocol):
    def append(self, entries: Sequence[Entry]) -> None:
        """Store entries, first dropping any stored entry at or after entries[0].index."""

    def sync(self) -> None:
        """Make every append so far durable (one fsync for the whole batch)."""

    def entries(self) -> list[Entry]:
        """All stored entries, in index order."""

    def compact(self, through_index: int) -> None:
        """Allow entries up to through_index to be discarded (a snapshot covers them)."""

    def reset(self, next_index: int) -> None:
        """Drop every entry and continue at next_index: a snapshot received from the leader
        replaces the whole log."""

    def close(self) -> None: ...


class StableStore(Protocol):
    def save(self, hard_state: HardState) -> None:
        """Durably and atomically replace the hard state."""

    def load(self) -> HardState: ...

    def close(self) -> None: ...


class SnapshotStore(Protocol):
    def save(self, snapshot: Snapshot) -> None:
        """Durably and atomically replace the latest snapshot."""

    def load(self) -> Snapshot | None: ...

    def close(self) -> None: ...


class MemoryLogStore:
    def __init__(self) -> None:
        self._entries: list[Entry] = []

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if self._entries and first <= self._entries[-1].index:
            del self._entries[max(0, first - self._entries[0].index) :]
        if self._entries and self._entries[-1].index != first - 1:
            raise ValueError(f"gap in log: last stored {self._entries[-1].index}, appending {first}")
        self._entries.extend(entries)

    def sync(self) -> None:
        pass

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def compact(self, through_index: int) -> None:
        self._entries = [e for e in self._entries if e.index > through_index]

    def reset(self, next_index: int = 0) -> None:
        self._entries = []

    def close(self) -> None:
        pass


class MemoryStableStore:
    def __init__(self) -> None:
        self._state = HardState()

    def save(self, hard_state: HardState) -> None:
        self._state = hard_state

    def load(self) -> HardState:
        return self._state

    def close(self) -> None:
        pass


class MemorySnapshotStore:
    def __init__(self) -> None:
        self._snapshot: Snapshot | None = None

    def save(self, snapshot: Snapshot) -> None:
        self._snapshot = snapshot

    def load(self) -> Snapshot | None:
        return self._snapshot

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class StoredState:
    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]
    peers_heard: frozenset[int] = frozenset()


class MemoryStorage:
    """The three in-memory stores together, with the same persist/load calls as
    persist.DiskStorage; survives a core (or RaftNode) restart within one process."""

    def __init__(self) -> None:
        self.logs = MemoryLogStore()
        self.stable = MemoryStableStore()
        self.snapshots = MemorySnapshotStore()
        self.peers_heard: frozenset[int] = frozenset()

    def bootstrap(self, founders: list[int]) -> None:
        self.logs.append(initial_entries(founders))
        self.stable.save(HardState(term=1, vote=0, commit=len(founders)))

    def load(self) -> StoredState:
        return StoredState(self.stable.load(), self.snapshots.load(), self.logs.entries(), self.peers_heard)

    def record_peers_heard(self, peers: frozenset[int]) -> None:
        self.peers_heard = peers

    def persist(self, rd: Ready) -> None:
        if rd.snapshot is not None:
            self.snapshots.save(rd.snapshot)
            self.logs.reset()
        self.logs.append(rd.entries)
        if rd.hard_state is not None:
            self.stable.save(rd.hard_state)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        self.snapshots.save(snapshot)

    def compact_log(self, through_index: int) -> None:
        self.logs.compact(through_index)

    def close(self) -> None:
        pass
