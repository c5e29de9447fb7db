"""One compact binary codec for every Raft type: messages, entries, hard state, snapshot
metadata and configuration changes. No pickle: decoding untrusted bytes can only produce
these dataclasses or raise CodecError."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable
from typing import Any

from controlplane.raft.messages import (
    MESSAGE_TYPES,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Message,
    SnapshotMeta,
)

_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_ENTRY_HEAD = struct.Struct("<QQBI")  # term, index, kind, data length
_HARD_STATE = struct.Struct("<QQQ")
_CONF_CHANGE = struct.Struct("<BQ")


class CodecError(ValueError):
    """Bytes that do not decode to a Raft type."""


class _Reader:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf = memoryview(buf)
        self.pos = 0

    def take(self, n: int) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            raise CodecError(f"truncated input: need {n} bytes at offset {self.pos}, have {len(self.buf) - self.pos}")
        view = self.buf[self.pos : end]
        self.pos = end
        return view

    def u64(self) -> int:
        return int(_U64.unpack(self.take(8))[0])

    def u32(self) -> int:
        return int(_U32.unpack(self.take(4))[0])

    def raw(self) -> bytes:
        return bytes(self.take(self.u32()))

    def done(self) -> None:
        if self.pos != len(self.buf):
            raise CodecError(f"{len(self.buf) - self.pos} trailing bytes")


def _write_entry(out: list[bytes], e: Entry) -> None:
    out.append(_ENTRY_HEAD.pack(e.term, e.index, int(e.kind), len(e.data)))
    out.append(e.data)


def _read_entry(r: _Reader) -> Entry:
    term, index, kind, n = _ENTRY_HEAD.unpack(r.take(_ENTRY_HEAD.size))
    try:
        entry_kind = EntryKind(kind)
    except ValueError:
        raise CodecError(f"unknown entry kind {kind}") from None
    return Entry(term, index, bytes(r.take(n)), entry_kind)


def _write_entries(out: list[bytes], entries: tuple[Entry, ...]) -> None:
    out.append(_U32.pack(len(entries)))
    for e in entries:
        _write_entry(out, e)


def _write_ids(out: list[bytes], ids: frozenset[int]) -> None:
    out.append(_U32.pack(len(ids)))
    out.extend(_U64.pack(i) for i in sorted(ids))


def _read_ids(r: _Reader) -> frozenset[int]:
    return frozenset(r.u64() for _ in range(r.u32()))


def _write_meta(out: list[bytes], m: SnapshotMeta) -> None:
    out.append(_U64.pack(m.index))
    out.append(_U64.pack(m.term))
    _write_ids(out, m.conf.voters)
    _write_ids(out, m.conf.learners)


def _read_meta(r: _Reader) -> SnapshotMeta:
    index, term = r.u64(), r.u64()
    voters, learners = _read_ids(r), _read_ids(r)
    try:
        return SnapshotMeta(index, term, ConfState(voters, learners))
    except ValueError as exc:
        raise CodecError(str(exc)) from None


# Field kinds by annotation (annotations are strings under `from __future__ import annotations`).
_WRITERS: dict[str, Callable[[list[bytes], Any], None]] = {
    "int": lambda out, v: out.append(_U64.pack(v)),
    "bool": lambda out, v: out.append(b"\x01" if v else b"\x00"),
    "bytes": lambda out, v: out.extend((_U32.pack(len(v)), v)),
    "SnapshotMeta": _write_meta,
    "tuple[Entry, ...]": lambda out, v: _write_entries(out, v),
}


def _read_bool(r: _Reader) -> bool:
    b = r.take(1)[0]
    if b > 1:
        raise CodecError(f"invalid bool byte {b}")
    return b == 1


_READERS: dict[str, Callable[[_Reader], Any]] = {
    "int": _Reader.u64,
    "bool": _read_bool,
    "bytes": _Reader.raw,
    "SnapshotMeta": _read_meta,
    "tuple[Entry, ...]": lambda r: tuple(_read_entry(r) for _ in range(r.u32())),
}

_SCHEMAS: list[tuple[type, tuple[tuple[str, str], ...]]] = [
    (cls, tuple((f.name, str(f.type)) for f in dataclasses.fields(cls))) for cls in MESSAGE_TYPES
]
_TAG_BY_TYPE = {cls: tag for tag, (cls, _) in enumerate(_SCHEMAS)}


def encode_message(msg: Message) -> bytes:
    return b"".join(_message_parts(msg))


def _message_parts(msg: Message) -> list[bytes]:
    tag = _TAG_BY_TYPE[type(msg)]
    out = [bytes((tag,))]
    for name, kind in _SCHEMAS[tag][1]:
        _WRITERS[kind](out, getattr(msg, name))
    return out


def decode_message(data: bytes | memoryview) -> Message:
    r = _Reader(data)
    tag = r.take(1)[0]
    if tag >= len(_SCHEMAS):
        raise CodecError(f"unknown message tag {tag}")
    cls, fields = _SCHEMAS[tag]
    values = {name: _READERS[kind](r) for name, kind in fields}
    r.done()
    msg: Message = cls(**values)
    return msg


def encode_entry(e: Entry) -> bytes:
    out: list[bytes] = []
    _write_entry(out, e)
    return b"".join(out)


def decode_entry(data: bytes | memoryview) -> Entry:
    r = _Reader(data)
    e = _read_entry(r)
    r.done()
    return e


def encode_hard_state(hs: HardState) -> bytes:
    return _HARD_STATE.pack(hs.term, hs.vote, hs.commit)


def decode_hard_state(data: bytes) -> HardState:
    if len(data) != _HARD_STATE.size:
        raise CodecError(f"hard state must be {_HARD_STATE.size} bytes, got {len(data)}")
    return HardState(*_HARD_STATE.unpack(data))


def encode_snapshot_meta(m: SnapshotMeta) -> bytes:
    out: list[bytes] = []
    _write_meta(out, m)
    return b"".join(out)


def decode_snapshot_meta(data: bytes) -> SnapshotMeta:
    r = _Reader(data)
    m = _read_meta(r)
    r.done()
    return m


def encode_conf_change(c: ConfChange) -> bytes:
    return _CONF_CHANGE.pack(int(c.op), c.node_id)


def decode_conf_change(data: bytes) -> ConfChange:
    if len(data) != _CONF_CHANGE.size:
        raise CodecError(f"conf change must be {_CONF_CHANGE.size} bytes, got {len(data)}")
    op, node = _CONF_CHANGE.unpack(data)
    try:
        return ConfChange(ConfChangeOp(op), node)
    except ValueError:
        raise CodecError(f"unknown conf change op {op}") from None


def encode_batch(messages: list[Message] | tuple[Message, ...]) -> bytes:
    """Several messages in one body: u32 count, then u32 length + message, each."""
    out = [_U32.pack(len(messages))]
    for m in messages:
        # One join for the whole batch: entries' data (megabytes of telemetry) copied once.
        parts = _message_parts(m)
        out.append(_U32.pack(sum(len(p) for p in parts)))
        out += parts
    return b"".join(out)


def decode_batch(data: bytes | memoryview) -> list[Message]:
    r = _Reader(data)
    messages = [decode_message(r.take(r.u32())) for _ in range(r.u32())]
    r.done()
    return messages
