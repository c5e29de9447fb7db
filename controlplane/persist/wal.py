"""The write-ahead log: entries as checksummed records in segment files.

Record: u32 payload length, u32 CRC-32 of the payload, payload (an encoded Entry).
Segments are named by the index of their first entry. Appends go to the OS; sync() makes
every append since the last sync durable with one fsync per touched file (group commit).

Recovery reads every segment. A record cut short, or a final record whose checksum fails
with nothing after it, is a torn write from a crash: it is truncated away. Any other bad
record is corruption and is refused with the file and byte offset: silently skipping it
could drop an acknowledged entry.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from controlplane.persist.errors import CorruptionError, StorageError
from controlplane.persist.files import fsync_dir
from controlplane.raft.codec import CodecError, decode_entry, encode_entry
from controlplane.raft.messages import Entry

_HEAD = struct.Struct("<II")
_NAME = re.compile(r"^wal-(\d{20})\.log$")
MAX_RECORD = 256 << 20


def _segment_name(first_index: int) -> str:
    return f"wal-{first_index:020d}.log"


class _Segment:
    __slots__ = ("first_index", "offsets", "path")

    def __init__(self, path: Path, first_index: int) -> None:
        self.path = path
        self.first_index = first_index
        self.offsets: list[int] = []  # byte offset of each record, by index - first_index

    @property
    def last_index(self) -> int:
        return self.first_index + len(self.offsets) - 1


class FileLogStore:
    def __init__(self, directory: Path, segment_bytes: int = 64 << 20) -> None:
        if segment_bytes < 1024:
            raise ValueError(f"segment_bytes must be at least 1024, got {segment_bytes}")
        self.dir = Path(directory)
        self.segment_bytes = segment_bytes
        self.segments: list[_Segment] = []
        self._entries: list[Entry] = []
        self.repaired_tail_bytes = 0
        self._recover()
        self._file: BinaryIO | None = None
        self._size = 0
        self._dirty: set[Path] = set()
        self._dir_dirty = False

    # --- recovery ---------------------------------------------------------------------------

    def _recover(self) -> None:
        paths = sorted(p for p in self.dir.iterdir() if _NAME.match(p.name))
        for n, path in enumerate(paths):
            match = _NAME.match(path.name)
            assert match is not None
            seg = _Segment(path, int(match.group(1)))
            if self._entries and seg.first_index != self._entries[-1].index + 1:
                raise CorruptionError(
                    path, 0, f"segment starts at index {seg.first_index}, expected {self._entries[-1].index + 1}"
                )
            self._read_segment(seg, is_last=n == len(paths) - 1)
            self.segments.append(seg)

    def _read_segment(self, seg: _Segment, is_last: bool) -> None:
        data = seg.path.read_bytes()
        pos = 0
        while pos < len(data):
            problem = self._check_record(data, pos)
            if problem is None:
                length = _HEAD.unpack_from(data, pos)[0]
                payload = data[pos + _HEAD.size : pos + _HEAD.size + length]
                try:
                    entry = decode_entry(payload)
                except CodecError as exc:
                    raise CorruptionError(seg.path, pos, f"undecodable entry: {exc}") from None
                expected = seg.first_index + len(seg.offsets)
                if entry.index != expected:
                    raise CorruptionError(seg.path, pos, f"entry index {entry.index}, expected {expected}")
                seg.offsets.append(pos)
                self._entries.append(entry)
                pos += _HEAD.size + length
                continue
            torn, reason = problem
            if is_last and torn:
                self.repaired_tail_bytes = len(data) - pos
                with open(seg.path, "r+b") as f:
                    f.truncate(pos)
                    f.flush()
                    os.fsync(f.fileno())
                return
            raise CorruptionError(seg.path, pos, reason)

    @staticmethod
    def _check_record(data: bytes, pos: int) -> tuple[bool, str] | None:
        """None if the record at pos is sound, else (looks_torn, reason)."""
        rest = len(data) - pos
        if rest < _HEAD.size:
            return True, "record header cut short"
        length, crc = _HEAD.unpack_from(data, pos)
        end = pos + _HEAD.size + length
        if length == 0 or length > MAX_RECORD:
            # A crash can leave zero-filled space at the tail; anything else is damage.
            return not any(data[pos:]), f"impossible record length {length}"
        if end > len(data):
            return True, "record cut short"
        if zlib.crc32(data[pos + _HEAD.size : end]) != crc:
            return end == len(data), "checksum mismatch"
        return None

    # --- LogStore ---------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def last_index(self) -> int:
        return self._entries[-1].index if self._entries else 0

    def append(self, entries: Sequence[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if self._entries:
            if first > self._entries[-1].index + 1:
                raise StorageError(f"gap in log: last stored index {self._entries[-1].index}, appending {first}")
            if first <= self._entries[-1].index:
                self._truncate_from(first)
        records = []
        for e in entries:
            payload = encode_entry(e)
            records.append(_HEAD.pack(len(payload), zlib.crc32(payload)) + payload)
        for e, rec in zip(entries, records, strict=True):
            f = self._writable(e.index)
            seg = self.segments[-1]
            seg.offsets.append(self._size)
            f.write(rec)
            self._size += len(rec)
            self._entries.append(e)

    def sync(self) -> None:
        if self._file is not None:
            self._file.flush()
        for path in self._dirty:
            if self._file is not None and Path(self._file.name) == path:
                os.fsync(self._file.fileno())
            else:
                fd = os.open(path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self._dirty.clear()
        if self._dir_dirty:
            fsync_dir(self.dir)
            self._dir_dirty = False

    def compact(self, through_index: int) -> None:
        """Delete whole segments whose entries are all at or below through_index."""
        while len(self.segments) > 1 and self.segments[1].first_index <= through_index + 1:
            seg = self.segments.pop(0)
            seg.path.unlink()
            self._dir_dirty = True
        keep_from = self.segments[0].first_index if self.segments else through_index + 1
        if self._entries and self._entries[0].index < keep_from:
            self._entries = self._entries[keep_from - self._entries[0].index :]
        if not self.segments:
            self._entries = [e for e in self._entries if e.index > through_index]

    def reset(self) -> None:
        """Drop every entry: an installed snapshot replaces the whole log."""
        if self._file is not None:
            self._file.close()
            self._file = None
        for seg in self.segments:
            seg.path.unlink()
            self._dirty.discard(seg.path)
        self.segments = []
        self._entries = []
        self._size = 0
        self._dir_dirty = True

    def close(self) -> None:
        if self._file is not None:
            self.sync()
            self._file.close()
            self._file = None

    # --- internals --------------------------------------------------------------------------

    def _writable(self, index: int) -> BinaryIO:
        if self._file is None:
            if self.segments:
                self._reopen_tail()
            else:
                self._open_segment(index)
        if self._size >= self.segment_bytes:
            self._open_segment(index)
        assert self._file is not None
        self._dirty.add(self.segments[-1].path)
        return self._file

    def _open_segment(self, first_index: int) -> None:
        if self._file is not None:
            self._file.flush()
            self._file.close()
        path = self.dir / _segment_name(first_index)
        self.segments.append(_Segment(path, first_index))
        self._file = open(path, "ab")  # noqa: SIM115 - held open for appends
        self._size = 0
        self._dir_dirty = True

    def _reopen_tail(self) -> None:
        seg = self.segments[-1]
        self._file = open(seg.path, "ab")  # noqa: SIM115
        self._size = self._file.tell()

    def _truncate_from(self, index: int) -> None:
        if self._entries and index <= self._entries[0].index:
            raise StorageError(f"cannot truncate at {index}: at or before the first stored index")
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None
        while self.segments and self.segments[-1].first_index >= index:
            seg = self.segments.pop()
            seg.path.unlink()
            self._dirty.discard(seg.path)
            self._dir_dirty = True
        seg = self.segments[-1]
        keep = index - seg.first_index
        cut = seg.offsets[keep] if keep < len(seg.offsets) else None
        if cut is not None:
            del seg.offsets[keep:]
            with open(seg.path, "r+b") as f:
                f.truncate(cut)
            self._dirty.add(seg.path)
        del self._entries[index - self._entries[0].index :]
        self._reopen_tail()
