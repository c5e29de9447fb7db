"""The filesystem seam under persist/: the few operations a replica's durable state needs.

`OsFileSystem` is the real one. The simulator gives persist/ a `SimFileSystem`
(controlplane/sim/fs.py) that keeps unsynced bytes volatile, loses or tears them on a crash,
can crash between any two operations and can flip bits: the same WAL, hard-state and
snapshot code runs in production and under simulation.

What the callers may rely on, and nothing more (POSIX, as ext4 and XFS keep it):
- bytes written to a file are durable only after `fsync` of that file;
- a name created, renamed or removed is durable only after `fsync_dir` of its directory;
- after a crash a file holds what was synced plus, possibly, a prefix of what came after
  (the last write possibly cut short, possibly followed by zeros).
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Protocol


class AppendFile(Protocol):
    """A file open for appending; `size` counts every byte written so far."""

    @property
    def size(self) -> int: ...

    def write(self, data: bytes) -> None: ...

    def fsync(self) -> None: ...

    def close(self) -> None: ...


class DirectoryLock(Protocol):
    def release(self) -> None: ...


class FileSystem(Protocol):
    def exists(self, path: Path) -> bool: ...

    def makedirs(self, path: Path) -> None:
        """Create the directory and its parents (durably: the parents are fsynced)."""

    def listdir(self, path: Path) -> list[str]: ...

    def read(self, path: Path) -> bytes: ...

    def open_append(self, path: Path) -> AppendFile:
        """Open for appending, creating the file if it is missing."""

    def create(self, path: Path) -> AppendFile:
        """Create (or empty) a file and open it for writing."""

    def truncate(self, path: Path, size: int) -> None: ...

    def fsync_file(self, path: Path) -> None: ...

    def rename(self, src: Path, dst: Path) -> None: ...

    def remove(self, path: Path) -> None: ...

    def fsync_dir(self, path: Path) -> None: ...

    def lock(self, path: Path) -> DirectoryLock:
        """An exclusive lock on `path` (created if missing); BlockingIOError when held."""


class _OsAppendFile:
    __slots__ = ("_fd", "size")

    def __init__(self, path: Path, flags: int) -> None:
        self._fd = os.open(path, flags, 0o644)
        self.size = os.lseek(self._fd, 0, os.SEEK_END)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self.size += len(data)

    def fsync(self) -> None:
        os.fdatasync(self._fd) if hasattr(os, "fdatasync") else os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class _OsLock:
    def __init__(self, fd: int) -> None:
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


class OsFileSystem:
    """The machine's own filesystem."""

    def exists(self, path: Path) -> bool:
        return path.exists()

    def makedirs(self, path: Path) -> None:
        missing = []
        p = path
        while not p.exists():
            missing.append(p)
            p = p.parent
        path.mkdir(parents=True, exist_ok=True)
        for created in reversed(missing):
            self.fsync_dir(created.parent)

    def listdir(self, path: Path) -> list[str]:
        return sorted(os.listdir(path))

    def read(self, path: Path) -> bytes:
        return path.read_bytes()

    def open_append(self, path: Path) -> AppendFile:
        return _OsAppendFile(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

    def create(self, path: Path) -> AppendFile:
        return _OsAppendFile(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    def truncate(self, path: Path, size: int) -> None:
        os.truncate(path, size)

    def fsync_file(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def rename(self, src: Path, dst: Path) -> None:
        os.replace(src, dst)

    def remove(self, path: Path) -> None:
        os.unlink(path)

    def fsync_dir(self, path: Path) -> None:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def lock(self, path: Path) -> DirectoryLock:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise
        return _OsLock(fd)


OS_FILESYSTEM = OsFileSystem()
