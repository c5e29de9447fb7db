"""A replica's data directory: identity, lock, WAL (entries and hard state) and snapshots.

The identity file binds the directory to one (cluster, node) and names its on-disk format,
so a misconfigured replica cannot adopt another's votes and log and an older layout is
refused by name; the lock keeps two processes out of one directory.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from controlplane import bugs
from controlplane.persist.errors import StorageError
from controlplane.persist.files import atomic_write, read_checked
from controlplane.persist.fs import OS_FILESYSTEM, FileSystem
from controlplane.persist.snapshots import FileSnapshotStore
from controlplane.persist.wal import SEGMENT_BYTES, FileLogStore
from controlplane.raft.core import initial_entries
from controlplane.raft.messages import Entry, EntryKind, HardState, Ready, Snapshot

_IDENTITY_MAGIC = b"RID1"
_PEERS_HEARD_MAGIC = b"PHR1"
PEERS_HEARD_FILE = "peers-heard"
# 1: hard state in its own file, WAL records without a header checksum. 2: today's.
FORMAT = 2


@dataclass(frozen=True)
class RecoveredState:
    hard_state: HardState
    snapshot: Snapshot | None
    entries: list[Entry]
    fresh: bool  # True when the directory was just created (a new member)
    repaired_tail_bytes: int
    peers_heard: frozenset[int] = frozenset()


class DiskStorage:
    def __init__(
        self,
        directory: Path | str,
        *,
        cluster: str,
        node_id: int,
        segment_bytes: int = SEGMENT_BYTES,
        fs: FileSystem = OS_FILESYSTEM,
    ) -> None:
        self.dir = Path(directory)
        self.fs = fs
        self._snapshot_lock = threading.Lock()
        fs.makedirs(self.dir)
        try:
            self._lock = fs.lock(self.dir / "LOCK")
        except BlockingIOError:
            raise StorageError(f"{self.dir} is in use by another process") from None
        try:
            self.fresh = self._check_identity(cluster, node_id)
            for sub in ("wal", "snap"):
                if not fs.exists(self.dir / sub):
                    fs.makedirs(self.dir / sub)
            self.snapshots = FileSnapshotStore(self.dir / "snap", fs=fs)
            self._snapshot = self.snapshots.load()
            # Entries below the snapshot's own are not read back: the log joins it at its index.
            covered = self._snapshot.meta.index if self._snapshot is not None else 0
            self.wal = FileLogStore(self.dir / "wal", segment_bytes=segment_bytes, fs=fs, skip_below=covered)
            self._join_log_to_snapshot()
        except BaseException:
            self._lock.release()
            raise
        self._saved_vote = (self.wal.hard_state.term, self.wal.hard_state.vote)

    def _check_identity(self, cluster: str, node_id: int) -> bool:
        path = self.dir / "identity"
        want = {"cluster": cluster, "node_id": node_id, "format": FORMAT}
        if not self.fs.exists(path):
            atomic_write(self.fs, path, _IDENTITY_MAGIC, json.dumps(want).encode())
            return True
        have = json.loads(read_checked(self.fs, path, _IDENTITY_MAGIC))
        if (have.get("cluster"), have.get("node_id")) != (cluster, node_id):
            raise StorageError(
                f"{self.dir} belongs to cluster {have.get('cluster')!r} node {have.get('node_id')}, "
                f"not cluster {cluster!r} node {node_id}"
            )
        if have.get("format", 1) != FORMAT:
            raise StorageError(
                f"{self.dir} holds on-disk format {have.get('format', 1)}, this version reads format {FORMAT}: "
                "move the directory away and let the replica rejoin as a new member"
            )
        return False

    def _join_log_to_snapshot(self) -> None:
        """The log must continue right after the snapshot. A crash between saving a received
        snapshot and resetting the log leaves entries the snapshot replaces: drop them."""
        snap = self._snapshot
        if snap is None or bugs.enabled("snapshot_wal_gap"):
            return
        index, term = snap.meta.index, snap.meta.term
        entries = self.wal.entries()
        first = entries[0].index if entries else self.wal.next_index()
        if first is not None and first > index + 1:
            raise StorageError(
                f"{self.dir}: the log starts at index {first} but the newest snapshot ends at {index}: "
                "entries in between are missing"
            )
        if first is not None and first <= index:
            at_snapshot = entries[index - first] if index - first < len(entries) else None
            if at_snapshot is None or at_snapshot.term != term:
                self.wal.reset(index + 1)  # all covered, or diverged from the snapshot
        elif first is None:
            self.wal.reset(index + 1)

    def is_empty(self) -> bool:
        """No Raft state at all: no log, no snapshot, no term or vote."""
        return not self.wal.entries() and self._snapshot is None and self.wal.hard_state == HardState()

    def bootstrap(self, founders: list[int]) -> None:
        """Write a founding member's first state: the founders' configuration, committed."""
        if not self.is_empty():
            raise StorageError(f"{self.dir} already holds Raft state; refusing to bootstrap over it")
        hs = HardState(term=1, vote=0, commit=len(founders))
        self.wal.write(initial_entries(founders), hs)
        self.wal.sync()
        self._saved_vote = (hs.term, hs.vote)

    def load(self) -> RecoveredState:
        entries = self.wal.entries()
        return RecoveredState(
            self._recovered_hard_state(entries),
            self._snapshot,
            entries,
            self.fresh,
            self.wal.repaired_tail_bytes,
            read_peers_heard(self.dir, self.fs),
        )

    def record_peers_heard(self, peers: frozenset[int]) -> None:
        atomic_write(self.fs, self.dir / PEERS_HEARD_FILE, _PEERS_HEARD_MAGIC, json.dumps(sorted(peers)).encode())

    def _recovered_hard_state(self, entries: list[Entry]) -> HardState:
        """The stored hard state, its commit index raised to what the log itself proves.

        A leader proposes a configuration change only once the previous one has committed
        (core.py), so in any log every configuration change followed by another is
        committed. A torn write can keep new entries and lose the hard state written after
        them; this keeps a restarted replica from falling back more than one configuration
        (single-server changes overlap only with their neighbours)."""
        hs = self.wal.hard_state
        if bugs.enabled("stale_commit"):
            return hs
        snap_index = self._snapshot.meta.index if self._snapshot is not None else 0
        changes = [e.index for e in entries if e.kind is EntryKind.CONF_CHANGE and e.index > snap_index]
        if len(changes) >= 2 and changes[-2] > hs.commit:
            return HardState(hs.term, hs.vote, changes[-2])
        return hs

    def persist(self, rd: Ready) -> None:
        """Make a Ready's state durable when it must be (rd.must_sync()); a Ready that only
        moves the commit index is written without an fsync and rides on the next one."""
        if rd.snapshot is not None:
            with self._snapshot_lock:
                self.snapshots.save(rd.snapshot)
                self._snapshot = rd.snapshot
            self.wal.reset(rd.snapshot.meta.index + 1)  # a crash before this: see _join_log_to_snapshot
        hs = rd.hard_state
        if hs is not None and bugs.enabled("stale_commit") and (hs.term, hs.vote) == self._saved_vote:
            hs = None
        # Entries first, then the hard state whose commit index may count them, in one write.
        self.wal.write(rd.entries, hs)
        if rd.must_sync():
            self.wal.sync()
        if hs is not None:
            self._saved_vote = (hs.term, hs.vote)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """A snapshot of the applied state, durable when this returns. Safe to call from a
        worker thread while persist() runs: it touches only the snapshot directory."""
        with self._snapshot_lock:
            self.snapshots.save(snapshot)
            if self._snapshot is None or snapshot.meta.index > self._snapshot.meta.index:
                self._snapshot = snapshot

    def compact_log(self, through_index: int) -> None:
        """Drop log segments a durable snapshot covers (not from a worker thread)."""
        self.wal.compact(through_index)

    def close(self) -> None:
        try:
            self.wal.close()
        finally:
            self._lock.release()


def read_peers_heard(directory: Path | str, fs: FileSystem = OS_FILESYSTEM) -> frozenset[int]:
    """The peers a replica has had a message from (RaftNode.receive), read without locking the
    directory: whether a founder back with an empty directory took part in the group before."""
    path = Path(directory) / PEERS_HEARD_FILE
    if not fs.exists(path):
        return frozenset()
    peers = json.loads(read_checked(fs, path, _PEERS_HEARD_MAGIC))
    if not isinstance(peers, list) or not all(isinstance(p, int) and not isinstance(p, bool) for p in peers):
        raise StorageError(f"{path}: expected a list of Raft ids, found {str(peers)[:80]!r}")
    return frozenset(peers)


def peek_hard_state(directory: Path | str, fs: FileSystem = OS_FILESYSTEM) -> HardState | None:
    """The hard state in a data directory, read without locking or repairing it (None when
    there is none); for a replica deciding whether it ran before."""
    wal_dir = Path(directory) / "wal"
    if not fs.exists(wal_dir):
        return None
    return FileLogStore(wal_dir, fs=fs, read_only=True, skip_below=sys.maxsize).hard_state
