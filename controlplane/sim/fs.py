"""A simulated station disk behind persist/'s FileSystem seam.

Each file keeps the bytes that are durable and the writes since its last fsync; each
directory keeps the namespace changes (create, rename, remove) since its last fsync. A
power loss keeps, per file, a random prefix of its unsynced writes (the last one possibly
cut short and followed by zeros) and, per directory, a random prefix of its unsynced
namespace changes. A process kill keeps everything the process handed to the OS.

`crash_after(n)` makes the n-th next mutating operation raise SimCrash instead of running
(the machine dies between two operations); `crash_before_touching(name)` does the same at
the first mutating operation on a path through `name`. The disk then refuses every call until
`reboot()`. `flip_bit()` damages durable bytes for the corruption checks. `fail_next_fsync`
makes an fsync raise OSError(EIO), as a failing disk does.
"""

from __future__ import annotations

import errno
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


class SimCrash(BaseException):
    """The simulated machine lost power (or its process died) in the middle of I/O. A
    BaseException so that no `except Exception` in the code under test swallows it."""


@dataclass
class _Inode:
    durable: bytearray = field(default_factory=bytearray)
    # unsynced changes, oldest first: ("write", offset, data) or ("truncate", size)
    pending: list[tuple[str, int, bytes]] = field(default_factory=list)
    data: bytearray = field(default_factory=bytearray)  # what reads see now

    def sync(self) -> None:
        self.durable = bytearray(self.data)
        self.pending = []


@dataclass
class _DirOp:
    kind: str  # "link" or "unlink"
    name: str
    inode: _Inode | None = None


class _SimFile:
    def __init__(self, fs: SimFileSystem, path: Path, inode: _Inode) -> None:
        self._fs = fs
        self._path = path
        self._inode = inode
        self._open = True

    @property
    def size(self) -> int:
        return len(self._inode.data)

    def write(self, data: bytes) -> None:
        self._fs._step("write", self._path)
        inode = self._inode
        inode.pending.append(("write", len(inode.data), bytes(data)))
        inode.data += data
        self._fs.bytes_written += len(data)

    def fsync(self) -> None:
        self._fs._step("fsync", self._path)
        self._fs._maybe_fail_fsync(self._path)
        self._fs._sync(self._inode)

    def close(self) -> None:
        self._open = False


class _SimLock:
    def __init__(self, fs: SimFileSystem, key: str) -> None:
        self._fs, self._key = fs, key

    def release(self) -> None:
        self._fs._locks.discard(self._key)


class SimFileSystem:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self._names: dict[str, _Inode] = {}  # the namespace as reads see it
        self._durable_names: dict[str, _Inode] = {}
        self._dirs: set[str] = {"/"}
        self._dir_ops: dict[str, list[_DirOp]] = {}
        self._locks: set[str] = set()
        self._crash_countdown: int | None = None
        self._crash_before: str | None = None
        self._fail_fsyncs = 0
        self.down = False
        self.on_crash: Callable[[], None] | None = None  # told when a planned crash strikes
        self.lies_about_fsync = False  # --lossy-disk: fsync returns without making data durable
        self.operations = 0
        self.bytes_written = 0
        self.crashes = 0
        self.torn_writes = 0
        self.failed_fsyncs = 0

    # --- faults -----------------------------------------------------------------------------

    def crash_after(self, operations: int) -> None:
        self._crash_countdown = max(1, operations)

    def crash_before_touching(self, name: str) -> None:
        self._crash_before = name

    def fail_next_fsync(self) -> None:
        self._fail_fsyncs += 1

    def disarm(self) -> None:
        """No planned crash or fsync error any more (the faults are over)."""
        self._crash_countdown = None
        self._crash_before = None
        self._fail_fsyncs = 0

    def _sync(self, inode: _Inode) -> None:
        if self.lies_about_fsync and self.rng.random() < 0.5:
            return  # the disk acknowledged the fsync and kept the data in a volatile cache
        inode.sync()

    def _step(self, what: str, path: Path) -> None:
        if self.down:
            raise SimCrash(f"disk is down ({what} {path})")
        self.operations += 1
        if self._crash_countdown is not None:
            self._crash_countdown -= 1
            if self._crash_countdown <= 0:
                self._crash_countdown = None
                self._power_fails(what, path)
        if self._crash_before is not None and self._crash_before in Path(path).parts:
            self._crash_before = None
            self._power_fails(what, path)

    def _power_fails(self, what: str, path: Path) -> None:
        self.down = True
        if self.on_crash is not None:
            self.on_crash()
        raise SimCrash(f"power lost before {what} {path}")

    def _maybe_fail_fsync(self, path: Path) -> None:
        if self._fail_fsyncs:
            self._fail_fsyncs -= 1
            self.failed_fsyncs += 1
            # fsyncgate: after a failed fsync the unsynced pages may be gone for good.
            raise OSError(errno.EIO, f"simulated I/O error on fsync of {path}")

    def crash(self, *, power_loss: bool) -> None:
        """The process died (power_loss=False: the OS keeps what it was given) or the
        machine lost power (unsynced writes and namespace changes partly lost)."""
        self.crashes += 1
        self._locks.clear()
        self._crash_countdown = None
        self.down = True
        if not power_loss:  # the OS outlives the process and writes back what it was given
            for path, ops in self._dir_ops.items():
                self.fsync_dir_unchecked(path, ops)
            self._dir_ops = {}
            for inode in self._names.values():
                inode.sync()
            return
        rng = self.rng
        durable = dict(self._durable_names)
        for ops in self._dir_ops.values():
            for op in ops[: rng.randrange(len(ops) + 1)]:
                if op.kind == "link":
                    assert op.inode is not None
                    durable[op.name] = op.inode
                else:
                    durable.pop(op.name, None)
        self._dir_ops = {}
        for inode in {id(i): i for i in list(durable.values()) + list(self._names.values())}.values():
            self._lose_unsynced(inode)
        self._names = dict(durable)
        self._durable_names = dict(durable)

    def _lose_unsynced(self, inode: _Inode) -> None:
        rng = self.rng
        content = bytearray(inode.durable)
        keep = rng.randrange(len(inode.pending) + 1)
        for i, (kind, offset, data) in enumerate(inode.pending[:keep]):
            if kind == "truncate":
                del content[offset:]
                continue
            last = i == keep - 1
            if last and data and rng.random() < 0.5:
                cut = rng.randrange(len(data))  # the last write reached the disk in part
                data = data[:cut] + (b"\0" * (len(data) - cut) if rng.random() < 0.3 else b"")
                self.torn_writes += 1
            if len(content) < offset:
                content += b"\0" * (offset - len(content))
            content[offset : offset + len(data)] = data
        inode.durable = content
        inode.data = bytearray(content)
        inode.pending = []

    def reboot(self) -> None:
        self.down = False

    def files_at_rest(self, directory: Path) -> dict[Path, bytes]:
        """The files in a directory as a look at the platter shows them (works while down)."""
        prefix = str(directory).rstrip("/") + "/"
        return {
            Path(k): bytes(inode.data)
            for k, inode in sorted(self._names.items())
            if k.startswith(prefix) and "/" not in k[len(prefix) :]
        }

    def flip_bit(self, path: Path, offset: int, bit: int = 0) -> None:
        inode = self._names[str(path)]
        for buf in (inode.durable, inode.data):
            if offset < len(buf):
                buf[offset] ^= 1 << bit

    def durable_size(self, path: Path) -> int:
        inode = self._names.get(str(path))
        return len(inode.durable) if inode is not None else 0

    # --- FileSystem -------------------------------------------------------------------------

    def exists(self, path: Path) -> bool:
        self._check_up(path)
        key = str(path)
        return key in self._names or key in self._dirs

    def makedirs(self, path: Path) -> None:
        self._check_up(path)
        p = Path(path)
        while str(p) not in self._dirs:
            self._dirs.add(str(p))  # directories are durable at once (created at install)
            p = p.parent

    def listdir(self, path: Path) -> list[str]:
        self._check_up(path)
        prefix = str(path).rstrip("/") + "/"
        return sorted(k[len(prefix) :] for k in self._names if k.startswith(prefix) and "/" not in k[len(prefix) :])

    def read(self, path: Path) -> bytes:
        self._check_up(path)
        inode = self._names.get(str(path))
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
        return bytes(inode.data)

    def open_append(self, path: Path) -> _SimFile:
        self._check_up(path)
        inode = self._names.get(str(path))
        if inode is None:
            return self.create(path)
        return _SimFile(self, path, inode)

    def create(self, path: Path) -> _SimFile:
        self._step("create", path)
        self._check_parent(path)
        inode = _Inode()
        self._link(path, inode)
        return _SimFile(self, path, inode)

    def truncate(self, path: Path, size: int) -> None:
        self._step("truncate", path)
        inode = self._inode(path)
        inode.pending.append(("truncate", size, b""))
        del inode.data[size:]

    def fsync_file(self, path: Path) -> None:
        self._step("fsync", path)
        self._maybe_fail_fsync(path)
        self._sync(self._inode(path))

    def rename(self, src: Path, dst: Path) -> None:
        self._step("rename", src)
        inode = self._inode(src)
        self._unlink(src)
        self._link(dst, inode)

    def remove(self, path: Path) -> None:
        self._step("remove", path)
        self._inode(path)
        self._unlink(path)

    def fsync_dir(self, path: Path) -> None:
        self._step("fsync_dir", path)
        self.fsync_dir_unchecked(str(path), self._dir_ops.pop(str(path), []))

    def fsync_dir_unchecked(self, path: str, ops: list[_DirOp]) -> None:
        for op in ops:
            if op.kind == "link":
                assert op.inode is not None
                self._durable_names[op.name] = op.inode
            else:
                self._durable_names.pop(op.name, None)

    def lock(self, path: Path) -> _SimLock:
        self._check_up(path)
        key = str(path)
        if key in self._locks:
            raise BlockingIOError(errno.EWOULDBLOCK, "locked", key)
        self._locks.add(key)
        return _SimLock(self, key)

    # --- internals --------------------------------------------------------------------------

    def _check_up(self, path: Path) -> None:
        if self.down:
            raise SimCrash(f"disk is down ({path})")

    def _check_parent(self, path: Path) -> None:
        if str(Path(path).parent) not in self._dirs:
            raise FileNotFoundError(errno.ENOENT, "no such directory", str(Path(path).parent))

    def _inode(self, path: Path) -> _Inode:
        inode = self._names.get(str(path))
        if inode is None:
            raise FileNotFoundError(errno.ENOENT, "no such file", str(path))
        return inode

    def _link(self, path: Path, inode: _Inode) -> None:
        self._names[str(path)] = inode
        self._dir_ops.setdefault(str(Path(path).parent), []).append(_DirOp("link", str(path), inode))

    def _unlink(self, path: Path) -> None:
        del self._names[str(path)]
        self._dir_ops.setdefault(str(Path(path).parent), []).append(_DirOp("unlink", str(path)))
