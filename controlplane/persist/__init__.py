"""Durable Raft state on the station's own disk: write-ahead log segments (entries and hard
state) and snapshots, each written so that a crash at any byte leaves a recoverable state.
All file access goes through a FileSystem (fs.py), so the simulator runs this same code."""

from controlplane.persist.errors import CorruptionError, StorageError
from controlplane.persist.fs import OS_FILESYSTEM, FileSystem, OsFileSystem
from controlplane.persist.snapshots import FileSnapshotStore
from controlplane.persist.storage import DiskStorage, RecoveredState, peek_hard_state, read_peers_heard
from controlplane.persist.wal import FileLogStore

__all__ = [
    "OS_FILESYSTEM",
    "CorruptionError",
    "DiskStorage",
    "FileLogStore",
    "FileSnapshotStore",
    "FileSystem",
    "OsFileSystem",
    "RecoveredState",
    "StorageError",
    "peek_hard_state",
    "read_peers_heard",
]
