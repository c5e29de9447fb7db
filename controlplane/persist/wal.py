"""The write-ahead log: Raft entries and hard states as checksummed records in segments.

Record: a 16-byte header (u32 payload length, u32 CRC-32 of the payload, u8 kind, 3 bytes
zero, u32 CRC-32 of the preceding 12 bytes), then the payload. The header has its own
checksum, so a damaged length is recognised as damage and never mistaken for the end of the
log. Kinds: an encoded Entry, an encoded HardState, or a reset (u64: the index the log
continues at, after an installed snapshot replaced it).

Hard states ride in the log (as etcd's WAL keeps them): the commit index is written with the
entries that taught it, in the same write and under the same fsync, so a restarted replica
knows at least what it knew when it last acknowledged anything. Every segment starts with the
current hard state, so dropping old segments never loses the latest one.

The log is append-only, as etcd's: nothing is ever cut out of a file. Entries that replace a
conflicting suffix are appended after it and win on replay; a reset record ends everything
before it. So no hard state is ever lost with the entries it followed, and every change of
the log is one append under one fsync. Segments are named by a sequence number (their replay
order) and the index of the first entry written to them. `write()` hands records to the OS;
`sync()` makes them durable with one fsync (group commit). A segment is fsynced before the
next one is started, so only the last segment can end in a torn write.

Recovery replays every segment in order. At the very end of the last segment, a record cut
short, a header that is all zeros, or a final record whose payload checksum fails is a torn
write and is truncated away. Anything else is corruption, refused with the file and byte
offset: silently skipping it could drop an acknowledged entry.
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
from controlplane.raft.codec import (
    CodecError,
    decode_entry,
    decode_hard_state,
    encode_entry,
    encode_hard_state,
    entry_index,
)
from controlplane.raft.messages import Entry, HardState

_HEAD = struct.Struct("<IIB3x")
_HEAD_CRC = struct.Struct("<I")
_RESET = struct.Struct("<Q")
HEADER_BYTES = _HEAD.size + _HEAD_CRC.size
ENTRY, HARD_STATE, RESET = 1, 2, 3
_NAME = re.compile(r"^wal-(\d{10})-(\d{20})\.log$")
MAX_RECORD = 256 << 20
# A segment is deleted once a snapshot covers it; a restart reads (and holds) every entry of
# the segments left. 64 MiB held ~200,000 small commands: 1.5 s and ~35 MB to reopen.
SEGMENT_BYTES = 4 << 20


def segment_name(seq: int, first_index: int) -> str:
    return f"wal-{seq:010d}-{first_index:020d}.log"


def record(kind: int, payload: bytes) -> bytes:
    head = _HEAD.pack(len(payload), zlib.crc32(payload), kind)
    return head + _HEAD_CRC.pack(zlib.crc32(head)) + payload


class _Segment:
    __slots__ = ("first_index", "path", "seq")

    def __init__(self, path: Path, seq: int, first_index: int) -> None:
        self.path = path
        self.seq = seq  # replay order
        self.first_index = first_index  # of the first entry written to it


class FileLogStore:
    def __init__(
        self,
        directory: Path,
        segment_bytes: int = SEGMENT_BYTES,
        *,
        fs: FileSystem = OS_FILESYSTEM,
        read_only: bool = False,
        skip_below: int = 0,
    ) -> None:
        """skip_below: entries below this index are checked on reading but not kept (a snapshot
        covers them: decoding the thousands a segment holds below it was ~40 % of a restart's
        WAL read)."""
        if segment_bytes < 1024:
            raise ValueError(f"segment_bytes must be at least 1024, got {segment_bytes}")
        self.dir = Path(directory)
        self.fs = fs
        self.segment_bytes = segment_bytes
        self.read_only = read_only
        self.segments: list[_Segment] = []
        self._entries: list[Entry] = []
        self._position: int | None = None  # the next index while there are no entries
        self.hard_state = HardState()  # the latest one written
        self.repaired_tail_bytes = 0
        self._file: AppendFile | None = None
        self._unsynced = False
        self._dir_dirty = False  # names created or removed since the directory's last fsync
        self._seq = 0  # of the newest segment
        self._skip_below = skip_below
        self._recover()

    # --- recovery ---------------------------------------------------------------------------

    def _recover(self) -> None:
        names = [n for n in self.fs.listdir(self.dir) if _NAME.match(n)]
        for n, name in enumerate(names):
            match = _NAME.match(name)
            assert match is not None
            seg = _Segment(self.dir / name, int(match.group(1)), int(match.group(2)))
            if not self._entries and self._position is None:
                self._position = seg.first_index
            self._read_segment(seg, is_last=n == len(names) - 1)
            self.segments.append(seg)
            self._seq = seg.seq

    def _read_segment(self, seg: _Segment, is_last: bool) -> None:
        data = self.fs.read(seg.path)
        pos = 0
        while pos < len(data):
            damage = self._check_record(data, pos, is_last)
            if damage is not None:
                torn, reason = damage
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
                problem = self._replay(kind, payload)
            except (CodecError, struct.error) as exc:
                problem = f"undecodable record: {exc}"
            if problem:
                raise CorruptionError(seg.path, pos, problem)
            pos += HEADER_BYTES + length

    def _replay(self, kind: int, payload: bytes) -> str | None:
        if kind == HARD_STATE:
            self.hard_state = decode_hard_state(payload)
        elif kind == RESET:
            (self._position,) = _RESET.unpack(payload)
            self._entries = []
        else:
            index = entry_index(payload)
            expected = self.next_index()
            if expected is not None and index > expected:
                return f"entry index {index}, expected at most {expected}"
            if self._entries:  # a later write replaces what it overlaps
                del self._entries[max(0, index - self._entries[0].index) :]
            if index < self._skip_below:
                if not self._entries:
                    self._position = index + 1
            else:
                self._entries.append(decode_entry(payload))
        return None

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
        if kind not in (ENTRY, HARD_STATE, RESET) or length > MAX_RECORD:
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
        return self._entries[-1].index + 1 if self._entries else self._position

    def append(self, entries: Sequence[Entry]) -> None:
        self.write(entries, None)

    def write(self, entries: Sequence[Entry], hard_state: HardState | None) -> None:
        """Hand entries (replacing any stored suffix from entries[0].index on), then the hard
        state, to the OS in one write. Durable only after sync()."""
        self._check_writable()
        if entries:
            self._make_room(entries[0].index)
        records = [record(ENTRY, encode_entry(e)) for e in entries]
        if hard_state is not None:
            records.append(record(HARD_STATE, encode_hard_state(hard_state)))
        self._append(records, entries)
        if hard_state is not None:
            self.hard_state = hard_state

    def _make_room(self, first: int) -> None:
        expected = self.next_index()
        if expected is not None and first > expected:
            raise StorageError(f"gap in log: next stored index would be {expected}, appending {first}")
        if expected is None or first == expected:
            return
        start = self._entries[0].index if self._entries else expected
        if first < start:
            raise StorageError(f"cannot replace from {first}: the log starts at {start}")
        if bugs.enabled("wal_first_truncate") and first == start:
            raise StorageError(f"cannot truncate at {first}: at or before the first stored index")
        # The replacing entries follow the old ones on disk and win on replay.
        del self._entries[first - start :]

    def _append(self, records: list[bytes], entries: Sequence[Entry]) -> None:
        """Write records (entries[i] is records[i]) to the tail, starting a new segment
        (sealed, numbered, beginning with the hard state as it was) when the tail is full."""
        if not records:
            return
        if self._file is None:
            if self.segments:
                self._file = self.fs.open_append(self.segments[-1].path)
            else:
                self._start_segment(entries[0].index if entries else self.next_index() or 1)
        assert self._file is not None
        batch: list[bytes] = []
        size = self._file.size
        for i, rec in enumerate(records):
            if i < len(entries) and size >= self.segment_bytes:
                self._flush(batch)
                batch = []
                self._start_segment(entries[i].index)
                size = self._file.size
            batch.append(rec)
            size += len(rec)
            if i < len(entries):
                self._entries.append(entries[i])
        self._flush(batch)

    def _start_segment(self, first_index: int) -> None:
        """Seal the current segment (only the last may end torn) and begin the next one with
        the current hard state."""
        if self._file is not None:
            if self._unsynced:
                self._file.fsync()
                self._unsynced = False
            self._close_file()
        self._seq += 1
        path = self.dir / segment_name(self._seq, first_index)
        self.segments.append(_Segment(path, self._seq, first_index))
        self._file = self.fs.create(path)
        self._flush([record(HARD_STATE, encode_hard_state(self.hard_state))])
        self._dir_dirty = True

    def _flush(self, records: list[bytes]) -> None:
        if records:
            assert self._file is not None
            self._file.write(b"".join(records))
            self._unsynced = True

    def sync(self) -> None:
        if self._file is not None and self._unsynced:
            self._file.fsync()
        self._unsynced = False
        if self._dir_dirty:
            self.fs.fsync_dir(self.dir)
            self._dir_dirty = False

    def compact(self, through_index: int) -> None:
        """Drop old segments whose entries are all at or below through_index, or replaced."""
        self._check_writable()
        # A segment may go once a later one starts at or below through+1: what it holds
        # beyond that was replaced, what it holds before is in the snapshot.
        while len(self.segments) > 1 and min(s.first_index for s in self.segments[1:]) <= through_index + 1:
            self.fs.remove(self.segments.pop(0).path)  # if a crash brings it back: replayed, then replaced
            self._dir_dirty = True
        if self._entries and self._entries[0].index <= through_index:
            self._position = self._entries[-1].index + 1  # where the log goes on, should none stay
            self._entries = self._entries[min(len(self._entries), through_index + 1 - self._entries[0].index) :]

    def reset(self, next_index: int) -> None:
        """Drop every entry and continue at next_index (an installed snapshot replaces the
        whole log). Durable when it returns: a new segment beginning with the hard state and a
        reset record, fsynced, then the old segments removed (any that came back after a
        crash would be replayed before the reset, and ended by it)."""
        self._check_writable()
        old, self.segments = self.segments, []
        self._start_segment(next_index)
        self._flush([record(RESET, _RESET.pack(next_index))])
        self._entries, self._position = [], next_index
        self.sync()
        for seg in old:
            self.fs.remove(seg.path)
            self._dir_dirty = True

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
