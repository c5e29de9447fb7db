"""A replica's data directory: identity, lock, WAL, hard state and snapshots together.

The identity file binds the directory to one (cluster, node) so a misconfigured replica
cannot adopt another's votes and log; the lock keeps two processes out of one directory.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path

from controlplane.persist.errors import StorageError
from controlplane.persist.files import atomic_write, read_checked
from controlplane.persist.hardstate import FileStableStore
from controlplane.persist.snapshots import FileSnapshotStore
from controlplane.persist.wal import FileLogStore
from controlplane.raft.core import initial_entries
from controlplane.raft.messages import Entry, HardState, Ready, Snapshot

_IDENTITY_MAGIC = b"RID1"


@dataclass(frozen=True)
class RecoveredState:
    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]
    fresh: bool  # True when the directory was just created (a new member)
    repaired_tail_bytes: int


class DiskStorage:
    def __init__(self, directory: Path | str, *, cluster: str, node_id: int, segment_bytes: int = 64 << 20) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.dir / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise StorageError(f"{self.dir} is in use by another process") from None
        self.fresh = self._check_identity(cluster, node_id)
        (self.dir / "wal").mkdir(exist_ok=True)
        (self.dir / "snap").mkdir(exist_ok=True)
        self.wal = FileLogStore(self.dir / "wal", segment_bytes=segment_bytes)
        self.stable = FileStableStore(self.dir)
        self.snapshots = FileSnapshotStore(self.dir / "snap")
        self._saved = self._latest = self.stable.load()

    def _check_identity(self, cluster: str, node_id: int) -> bool:
        path = self.dir / "identity"
        want = {"cluster": cluster, "node_id": node_id}
        if not path.exists():
            atomic_write(path, _IDENTITY_MAGIC, json.dumps(want).encode())
            return True
        have = json.loads(read_checked(path, _IDENTITY_MAGIC))
        if have != want:
            raise StorageError(
                f"{self.dir} belongs to cluster {have.get('cluster')!r} node {have.get('node_id')}, "
                f"not cluster {cluster!r} node {node_id}"
            )
        return False

    def is_empty(self) -> bool:
        """No Raft state at all: no log, no snapshot, no term or vote."""
        return not self.wal.entries() and self.snapshots.load() is None and self.stable.load() == HardState()

    def bootstrap(self, founders: list[int]) -> None:
        """Write a founding member's first state: the founders' configuration, committed."""
        if not self.is_empty():
            raise StorageError(f"{self.dir} already holds Raft state; refusing to bootstrap over it")
        self.wal.append(initial_entries(founders))
        self.wal.sync()
        self._saved = self._latest = HardState(term=1, vote=0, commit=len(founders))
        self.stable.save(self._saved)

    def load(self) -> RecoveredState:
        self._saved = self._latest = self.stable.load()
        return RecoveredState(
            self._saved,
            self.snapshots.load(),
            self.wal.entries(),
            self.fresh,
            self.wal.repaired_tail_bytes,
        )

    def persist(self, rd: Ready) -> None:
        """Make a Ready's state durable; returns only once it is on disk."""
        # Log first, hard state second: a durable commit index must never point at log
        # entries that did not reach the disk. Both precede any message the Ready sends.
        if rd.snapshot is not None:
            self.snapshots.save(rd.snapshot)
            self.wal.reset()  # after the snapshot is durable: a crash between keeps both
        self.wal.append(rd.entries)
        if rd.entries or rd.snapshot is not None:
            self.wal.sync()
        hs = rd.hard_state
        if hs is None:
            return
        self._latest = hs
        if (hs.term, hs.vote) != (self._saved.term, self._saved.vote):
            # Term and vote must be durable before any message leaves; the commit index need
            # not be (Raft recovers it), so it rides along instead of costing fsyncs.
            self.stable.save(hs)
            self._saved = hs

    def save_snapshot(self, snapshot: Snapshot, compact_through: int) -> None:
        self.snapshots.save(snapshot)
        self.wal.compact(compact_through)

    def close(self) -> None:
        if self._latest != self._saved:
            self.stable.save(self._latest)
        self.wal.close()
        os.close(self._lock_fd)
