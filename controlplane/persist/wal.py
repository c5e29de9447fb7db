"""The write-ahead log: Raft entries and hard states as checksummed records in segments.

Record: a 16-byte header (u32 payload length, u32 CRC-32 of the payload, u8 kind, 3 bytes
zero, u32 CRC-32 of the preceding 12 bytes), then the payload: an encoded Entry or an
encoded HardState. The header has its own checksum, so a damaged length is recognised as
damage and never mistaken for the end of the log.

Hard states ride in the log (as etcd's WAL keeps them): the commit index is written with the
entries that taught it, in the same write and under the same fsync, so a restarted replica
knows at least what it knew when it last acknowledged anything. Every segment starts with the
current hard state, so compacting old segments never loses the latest one.

Segments are named by the index of their first entry. `write()` hands records to the OS;
`sync()` makes them durable with one fsync (group commit). A segment is fsynced before the
next one is started, and removals are made durable before anything is written after them,
so only the last segment can end in a torn write.

Recovery reads every segment. At the very end of the last segment, a record cut short, a
header that is all zeros, or a final record whose payload checksum fails is a torn write and
is truncated away. Anything else is corruption, refused with the file and byte offset:
silently skipping it could drop an acknowledged entry.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from controlplane import bugs
from controlplane.persist.errors import CorruptionError, StorageError
from controlplane.persist.fs import OS_FILESYSTEM, AppendFile, FileSystem
from controlplane.raft.codec import CodecError, decode_entry, decode_hard_state, encode_entry, encode_hard_state
from controlplane.raft.messages import Entry, HardState

_HEAD = struct.Struct("<IIB3x")
_HEAD_CRC = struct.Struct("<I")
HEADER_BYTES = _HEAD.size + _HEAD_CRC.size
ENTRY, HARD_STATE = 1, 2
_NAME = re.compile(r"^wal-(\d{20})\.log$")
MAX_RECORD = 256 << 20


def segment_name(first_index: int) -> str:
    return f"wal-{first_index:020d}.log"


def record(kind: int, payload: bytes) -> bytes:
    head = _HEAD.pack(len(payload), zlib.crc32(payload), kind)
    return head + _HEAD_CRC.pack(zlib.crc32(head)) + payload


class _Segment:
    __slots__ = ("first_index", "offsets", "path")

    def __init__(self, path: Path, first_index: int) -> None:
        self.path = path
        self.first_index = first_index
        self.offsets: list[int] = []  # byte offset of each entry record, by index - first_index


class FileLogStore:
    def __init__(
        self,
        directory: Path,
        segment_bytes: int = 64 << 20,
        *,
        fs: FileSystem = OS_FILESYSTEM,
        read_only: bool = False,
    ) -> None:
        if segment_bytes < 1024:
            raise ValueError(f"segment_bytes must be at least 1024, got {segment_bytes}")
        self.dir = Path(directory)
        self.fs = fs
        self.segment_bytes = segment_bytes
        self.read_only = read_only
        self.segments: list[_Segment] = []
        self._entries: list[Entry] = []
        self.hard_state = HardState()  # the latest one written
        self.repaired_tail_bytes = 0
        self._file: AppendFile | None = None
        self._unsynced = False
        self._dir_dirty = False
        self._hard_state_pending = False  # rewrite the hard state before the next record
        self._recover()

    # --- recovery ---------------------------------------------------------------------------

    def _recover(self) -> None:
        names = [n for n in self.fs.listdir(self.dir) if _NAME.match(n)]
        for n, name in enumerate(names):
            match = _NAME.match(name)
            assert match is not None
            seg = _Segment(self.dir / name, int(match.group(1)))
            if self._entries and seg.first_index != self._entries[-1].index + 1:
                raise CorruptionError(
                    seg.path, 0, f"segment starts at index {seg.first_index}, expected {self._entries[-1].index + 1}"
                )
            self._read_segment(seg, is_last=n == len(names) - 1)
            self.segments.append(seg)

    def _read_segment(self, seg: _Segment, is_last: bool) -> None:
        data = self.fs.read(seg.path)
        pos = 0
        while pos < len(data):
            problem = self._check_record(data, pos, is_last)
            if problem is not None:
                torn, reason = problem
                if not (is_last and torn):
                    raise CorruptionError(seg.path, pos, reason)
                self.repaired_tail_bytes = len(data) - pos
                if not self.read_only:
                    self.fs.truncate(seg.path, pos)
                    self.fs.fsync_file(seg.path)
                return
            length, _, kind = _HEAD.unpack_from(data, pos)
            payload = data[pos + HEADER_BYTES : pos + HEADER_BYTES + length]
            try:
                if kind == HARD_STATE:
                    self.hard_state = decode_hard_state(payload)
                else:
                    entry = decode_entry(payload)
            except CodecError as exc:
                raise CorruptionError(seg.path, pos, f"undecodable record: {exc}") from None
            if kind == ENTRY:
                expected = seg.first_index + len(seg.offsets)
                if entry.index != expected:
                    raise CorruptionError(seg.path, pos, f"entry index {entry.index}, expected {expected}")
                seg.offsets.append(pos)
                self._entries.append(entry)
            pos += HEADER_BYTES + length

    @staticmethod
    def _check_record(data: bytes, pos: int, is_last: bool) -> tuple[bool, str] | None:
        """None if the record at pos is sound, else (looks_torn, reason)."""
        if bugs.enabled("wal_length_unchecked"):
            return FileLogStore._check_record_length_unchecked(data, pos)
        rest = len(data) - pos
        if rest < HEADER_BYTES:
            return True, "record header cut short"
        head = data[pos : pos + _HEAD.size]
        (head_crc,) = _HEAD_CRC.unpack_from(data, pos + _HEAD.size)
        if zlib.crc32(head) != head_crc:
            # A crash can cut a header short and leave zeros after it; anything else is damage.
            return len(data[pos:].rstrip(b"\0")) < HEADER_BYTES, "record header checksum mismatch"
        length, crc, kind = _HEAD.unpack_from(data, pos)
        if kind not in (ENTRY, HARD_STATE) or length > MAX_RECORD:
            return False, f"impossible record (kind {kind}, length {length})"
        end = pos + HEADER_BYTES + length
        if end > len(data):
            return True, "record cut short"
        if zlib.crc32(data[pos + HEADER_BYTES : end]) != crc:
            # The final record of the log written in part (its tail never reached the disk).
            return end == len(data) or not any(data[end:]), "record checksum mismatch"
        return None

    @staticmethod
    def _check_record_length_unchecked(data: bytes, pos: int) -> tuple[bool, str] | None:
        """The defect `wal_length_unchecked`: the length is trusted without its checksum, and
        a length that runs past the end of the file is taken for a torn tail."""
        if len(data) - pos < HEADER_BYTES:
            return True, "record header cut short"
        length, crc, _ = _HEAD.unpack_from(data, pos)
        end = pos + HEADER_BYTES + length
        if length == 0 or length > MAX_RECORD or end > len(data):
            return True, "record cut short"
        if zlib.crc32(data[pos + HEADER_BYTES : end]) != crc:
            return end == len(data), "checksum mismatch"
        return None

    # --- LogStore ---------------------------------------------------------------------------

    def entries(self) -> list[Entry]:
        return list(self._entries)

    def first_index(self) -> int:
        return self._entries[0].index if self._entries else 0

    def last_index(self) -> int:
        return self._entries[-1].index if self._entries else 0

    def next_index(self) -> int | None:
        """The index the next appended entry must have; None when the log is empty and has
        no position yet (a fresh directory)."""
        if self._entries:
            return self._entries[-1].index + 1
        return self.segments[-1].first_index if self.segments else None

    def append(self, entries: Sequence[Entry]) -> None:
        self.write(entries, None)

    def write(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        """Hand entries (truncating any stored suffix they replace), then the hard state, to
        the OS in one write. Durable only after sync()."""
        self._check_writable()
        if entries:
            first = entries[0].index
            expected = self.next_index()
            if expected is not None and first > expected:
                raise StorageError(f"gap in log: next stored index would be {expected}, appending {first}")
            if expected is not None and first < expected:
                self._truncate_from(first)
        if not entries and hard_state is None and not self._hard_state_pending:
            return
        if self._file is None:
            self._open_tail(entries[0].index if entries else self.next_index())
        assert self._file is not None
        parts: list[bytes] = []
        size = self._file.size
        if self._hard_state_pending:
            # The hard state as it was: the new one (its commit may count these entries)
            # goes after them, so no torn write can keep it without them.
            parts.append(record(HARD_STATE, encode_hard_state(self.hard_state)))
            size += len(parts[-1])
            self._hard_state_pending = False
        for e in entries:
            if size >= self.segment_bytes:
                self._flush(parts)
                parts = [record(HARD_STATE, encode_hard_state(self.hard_state))]
                self._new_segment(e.index)
                self._hard_state_pending = False
                size = len(parts[0])
            rec = record(ENTRY, encode_entry(e))
            self.segments[-1].offsets.append(size)
            self._entries.append(e)
            size += len(rec)
            parts.append(rec)
        if hard_state is not None:
            parts.append(record(HARD_STATE, encode_hard_state(hard_state)))
            self.hard_state = hard_state
        self._flush(parts)

    def _flush(self, parts: list[bytes]) -> None:
        if parts:
            assert self._file is not None
            self._file.write(b"".join(parts))
            self._unsynced = True

    def sync(self) -> None:
        if self._file is not None and self._unsynced:
            self._file.fsync()
        self._unsynced = False
        if self._dir_dirty:
            self.fs.fsync_dir(self.dir)
            self._dir_dirty = False

    def compact(self, through_index: int) -> None:
        """Delete whole segments whose entries are all at or below through_index."""
        self._check_writable()
        while len(self.segments) > 1 and self.segments[1].first_index <= through_index + 1:
            seg = self.segments.pop(0)
            self.fs.remove(seg.path)
            self._dir_dirty = True
        keep_from = self.segments[0].first_index if self.segments else through_index + 1
        if self._entries and self._entries[0].index < keep_from:
            self._entries = self._entries[keep_from - self._entries[0].index :]

    def reset(self, next_index: int) -> None:
        """Drop every entry and continue at next_index (an installed snapshot replaces the
        whole log). Durable when it returns: no stale segment can come back after a crash."""
        self._check_writable()
        self._close_file()
        for seg in self.segments:
            self.fs.remove(seg.path)
        self.segments = []
        self._entries = []
        self._new_segment(next_index)
        self.write((), None)  # the hard state, first record of the new segment
        self.sync()

    def close(self) -> None:
        if self._file is not None:
            self.sync()
        self._close_file()

    # --- internals --------------------------------------------------------------------------

    def _check_writable(self) -> None:
        if self.read_only:
            raise StorageError(f"{self.dir}: the log was opened read-only")

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def _open_tail(self, next_index: int | None) -> None:
        if self.segments:
            self._file = self.fs.open_append(self.segments[-1].path)
        else:
            self._new_segment(next_index or 1)  # an empty log without a snapshot starts at 1

    def _new_segment(self, first_index: int) -> None:
        """Seal the current segment (only the last may end torn) and begin the next one with
        the current hard state."""
        if self._file is not None:
            if self._unsynced:
                self._file.fsync()
                self._unsynced = False
            self._close_file()
        path = self.dir / segment_name(first_index)
        self.segments.append(_Segment(path, first_index))
        self._file = self.fs.create(path)
        self._dir_dirty = True
        self._hard_state_pending = True

    def _truncate_from(self, index: int) -> None:
        first = self.segments[0].first_index if self.segments else index
        if index <= first or (self._entries and index <= self._entries[0].index):
            if bugs.enabled("wal_first_truncate") and self._entries:
                raise StorageError(f"cannot truncate at {index}: at or before the first stored index")
            self.reset(index)
            return
        self._close_file()
        removed = False
        while self.segments and self.segments[-1].first_index >= index:
            seg = self.segments.pop()
            self.fs.remove(seg.path)
            removed = True
        if removed:
            # Durable now: a later segment coming back after a crash would follow the new
            # entries with the old ones.
            self.fs.fsync_dir(self.dir)
        seg = self.segments[-1]
        keep = index - seg.first_index
        if keep < len(seg.offsets):
            self.fs.truncate(seg.path, seg.offsets[keep])
            del seg.offsets[keep:]
        del self._entries[index - self._entries[0].index :]
        self._file = self.fs.open_append(seg.path)
        self._unsynced = True
        # Hard-state records after the cut went with it: write the latest again.
        self._hard_state_pending = True
