"""A simulated station disk. Writes land in a volatile buffer until sync(); a crash keeps a
random prefix of that buffer and may tear the last log write (a torn record is dropped on
recovery, as the real WAL does). Hard state and snapshots are atomic files: all or nothing.

`lossy=True` models a disk that lies about fsync and loses writes it acknowledged; that
breaks Raft's storage assumption, and the simulator should then find violations."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from controlplane.raft.messages import Entry, HardState, Snapshot


@dataclass
class _Durable:
    hard_state: HardState = field(default_factory=HardState)
    snapshot: Snapshot | None = None
    log: list[Entry] = field(default_factory=list)

    def apply(self, op: tuple[str, object]) -> None:
        kind, arg = op
        if kind == "hs":
            assert isinstance(arg, HardState)
            self.hard_state = arg
        elif kind == "snap":
            assert isinstance(arg, Snapshot)
            self.snapshot = arg
        elif kind == "reset":
            self.log = []
        elif kind == "compact":
            assert isinstance(arg, int)
            self.log = [e for e in self.log if e.index > arg]
        elif kind == "append":
            assert isinstance(arg, list)
            self._append(arg)

    def _append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if self.log and first <= self.log[-1].index:
            del self.log[max(0, first - self.log[0].index) :]
        if self.log and first != self.log[-1].index + 1:
            raise AssertionError(f"simulated disk: gap appending {first} after {self.log[-1].index}")
        self.log.extend(entries)


class SimDisk:
    def __init__(self, rng: random.Random, *, lossy: bool = False) -> None:
        self.rng = rng
        self.lossy = lossy
        self.durable = _Durable()
        self.pending: list[tuple[str, object]] = []
        self.torn_writes = 0
        self.lost_synced_writes = 0
        self._previous_hard_state = HardState()

    def write_hard_state(self, hs: HardState) -> None:
        self.pending.append(("hs", hs))

    def write_snapshot(self, snapshot: Snapshot) -> None:
        self.pending.append(("snap", snapshot))

    def reset_log(self) -> None:
        self.pending.append(("reset", None))

    def append(self, entries: list[Entry]) -> None:
        self.pending.append(("append", list(entries)))

    def compact(self, through_index: int) -> None:
        self.pending.append(("compact", through_index))

    def sync(self) -> None:
        for op in self.pending:
            if op[0] == "hs":
                self._previous_hard_state = self.durable.hard_state
            self.durable.apply(op)
        self.pending = []

    def crash(self) -> None:
        """Power loss: unsynced writes partly reach the platter, the last one maybe torn."""
        keep = self.rng.randrange(len(self.pending) + 1)
        for op in self.pending[:keep]:
            self.durable.apply(op)
        if keep < len(self.pending) and self.pending[keep][0] == "append":
            entries = self.pending[keep][1]
            assert isinstance(entries, list)
            # The write reached the disk in part: whole records, then one torn (dropped).
            self.durable.apply(("append", entries[: self.rng.randrange(len(entries))]))
            self.torn_writes += 1
        self.pending = []
        if self.lossy:
            self._lose_synced_writes()

    def _lose_synced_writes(self) -> None:
        if self.durable.log and self.rng.random() < 0.7:
            drop = self.rng.randint(1, min(5, len(self.durable.log)))
            del self.durable.log[-drop:]
            self.lost_synced_writes += drop
        if self.rng.random() < 0.5:
            self.durable.hard_state = self._previous_hard_state
            self.lost_synced_writes += 1

    def load(self) -> tuple[HardState, Snapshot | None, list[Entry]]:
        return self.durable.hard_state, self.durable.snapshot, list(self.durable.log)
