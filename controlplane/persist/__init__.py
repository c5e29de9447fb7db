"""Durable Raft state on the station's own disk: write-ahead log segments, hard state and
snapshots, each written so that a crash at any byte leaves a recoverable state."""

from controlplane.persist.errors import CorruptionError, StorageError
from controlplane.persist.hardstate import FileStableStore
from controlplane.persist.snapshots import FileSnapshotStore
from controlplane.persist.storage import DiskStorage, RecoveredState
from controlplane.persist.wal import FileLogStore

__all__ = [
    "CorruptionError",
    "DiskStorage",
    "FileLogStore",
    "FileSnapshotStore",
    "FileStableStore",
    "RecoveredState",
    "StorageError",
]
