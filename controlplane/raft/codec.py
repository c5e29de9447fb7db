"""One compact binary codec for every Raft type: messages, entries, hard state, snapshot
metadata and configuration changes. No pickle: decoding untrusted bytes can only produce
these dataclasses or raise CodecError."""

from __future__ import annotations

import dataclasses
import operator
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
_INDEX_TERM = struct.Struct("<QQ")
_ENTRY_HEAD = struct.Struct("<QQBI")  # term, index, kind, data length
_HARD_STATE = struct.Struct("<QQQ")
_CONF_CHANGE = struct.Struct("<BQ")


class CodecError(ValueError):
    """Bytes that do not decode to a Raft type."""


def _write_entry(out: list[bytes], e: Entry) -> None:
    out.append(_ENTRY_HEAD.pack(e.term, e.index, int(e.kind), len(e.data)))
    out.append(e.data)


def _write_entries(out: list[bytes], entries: tuple[Entry, ...]) -> None:
    out.append(_U32.pack(len(entries)))
    for e in entries:
        _write_entry(out, e)


def _write_ids(out: list[bytes], ids: frozenset[int]) -> None:
    out.append(_U32.pack(len(ids)))
    out.extend(_U64.pack(i) for i in sorted(ids))


def _write_meta(out: list[bytes], m: SnapshotMeta) -> None:
    out.append(_U64.pack(m.index))
    out.append(_U64.pack(m.term))
    _write_ids(out, m.conf.voters)
    _write_ids(out, m.conf.learners)


# Each message type is compiled once into steps, in field order: a run of consecutive int and
# bool fields is one struct (one pack or unpack call for all of them), the rest (bytes,
# entries, snapshot metadata) one step each. The wire format is the field-by-field one: u64
# per int, one byte per bool, u32-prefixed bytes, u32-counted entries.
# A bool is written as "?" writes it (any true value as 1) and read as a byte that must be 0 or 1.
_WRITE_FORMATS = {"int": "Q", "bool": "?"}
_READ_FORMATS = {"int": "Q", "bool": "B"}


@dataclasses.dataclass(frozen=True, slots=True)
class _Fixed:
    writer: struct.Struct
    reader: struct.Struct
    get: Callable[[Any], tuple[Any, ...]]
    bools: tuple[int, ...]  # positions of bool fields within the run


@dataclasses.dataclass(frozen=True, slots=True)
class _Variable:
    name: str
    kind: str


def _fields_getter(names: list[str]) -> Callable[[Any], tuple[Any, ...]]:
    get = operator.attrgetter(*names)
    if len(names) > 1:
        return get
    return lambda msg: (get(msg),)


def _compile(cls: type) -> tuple[_Fixed | _Variable, ...]:
    steps: list[_Fixed | _Variable] = []
    run: list[tuple[str, str]] = []

    def close_run() -> None:
        if run:
            steps.append(
                _Fixed(
                    struct.Struct("<" + "".join(_WRITE_FORMATS[kind] for _, kind in run)),
                    struct.Struct("<" + "".join(_READ_FORMATS[kind] for _, kind in run)),
                    _fields_getter([name for name, _ in run]),
                    tuple(i for i, (_, kind) in enumerate(run) if kind == "bool"),
                )
            )
            run.clear()

    for field in dataclasses.fields(cls):
        kind = str(field.type)
        if kind in _WRITE_FORMATS:
            run.append((field.name, kind))
        elif kind in ("bytes", "SnapshotMeta", "tuple[Entry, ...]"):
            close_run()
            steps.append(_Variable(field.name, kind))
        else:
            raise TypeError(f"{cls.__name__}.{field.name}: no wire form for {kind}")
    close_run()
    return tuple(steps)


_STEPS = [_compile(cls) for cls in MESSAGE_TYPES]
_TAG_BY_TYPE = {cls: tag for tag, cls in enumerate(MESSAGE_TYPES)}
_TAG_BYTES = [bytes((tag,)) for tag in range(len(MESSAGE_TYPES))]
_ENTRY_KINDS = {int(kind): kind for kind in EntryKind}


def encode_message(msg: Message) -> bytes:
    return b"".join(_message_parts(msg))


def _message_parts(msg: Message) -> list[bytes]:
    tag = _TAG_BY_TYPE[type(msg)]
    out = [_TAG_BYTES[tag]]
    for step in _STEPS[tag]:
        if isinstance(step, _Fixed):
            out.append(step.writer.pack(*step.get(msg)))
        else:
            value = getattr(msg, step.name)
            if step.kind == "bytes":
                out += (_U32.pack(len(value)), value)
            elif step.kind == "tuple[Entry, ...]":
                _write_entries(out, value)
            else:
                _write_meta(out, value)
    return out


def _truncated(pos: int, need: int, end: int) -> CodecError:
    return CodecError(f"truncated input: need {need} bytes at offset {pos}, have {max(end - pos, 0)}")


def _fixed_at(layout: struct.Struct, view: memoryview, pos: int, end: int) -> tuple[tuple[Any, ...], int]:
    """`layout`'s values at `pos`, and the offset after them."""
    if pos + layout.size > end:
        raise _truncated(pos, layout.size, end)
    return layout.unpack_from(view, pos), pos + layout.size


def _length_prefixed(view: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Where the u32-length-prefixed bytes at `pos` start and stop."""
    (n,), pos = _fixed_at(_U32, view, pos, end)
    if pos + n > end:
        raise _truncated(pos, n, end)
    return pos, pos + n


def _read_ids(view: memoryview, pos: int, end: int) -> tuple[frozenset[int], int]:
    (count,), pos = _fixed_at(_U32, view, pos, end)
    ids, pos = _fixed_at(struct.Struct(f"<{count}Q"), view, pos, end)
    return frozenset(ids), pos


def _read_meta(view: memoryview, pos: int, end: int) -> tuple[SnapshotMeta, int]:
    (index, term), pos = _fixed_at(_INDEX_TERM, view, pos, end)
    voters, pos = _read_ids(view, pos, end)
    learners, pos = _read_ids(view, pos, end)
    try:
        return SnapshotMeta(index, term, ConfState(voters, learners)), pos
    except ValueError as exc:
        raise CodecError(str(exc)) from None


def _read_entry(view: memoryview, pos: int, end: int) -> tuple[Entry, int]:
    (term, index, kind, n), pos = _fixed_at(_ENTRY_HEAD, view, pos, end)
    if pos + n > end:
        raise _truncated(pos, n, end)
    entry_kind = _ENTRY_KINDS.get(kind)
    if entry_kind is None:
        raise CodecError(f"unknown entry kind {kind}")
    return Entry(term, index, bytes(view[pos : pos + n]), entry_kind), pos + n


def _read_entries(view: memoryview, pos: int, end: int) -> tuple[tuple[Entry, ...], int]:
    (count,), pos = _fixed_at(_U32, view, pos, end)
    entries = []
    for _ in range(count):
        entry, pos = _read_entry(view, pos, end)
        entries.append(entry)
    return tuple(entries), pos


def _decode_at(view: memoryview, pos: int, end: int) -> Message:
    """The message that fills view[pos:end] exactly."""
    if pos >= end:
        raise _truncated(pos, 1, end)
    tag = view[pos]
    if tag >= len(_STEPS):
        raise CodecError(f"unknown message tag {tag}")
    pos += 1
    values: list[Any] = []
    for step in _STEPS[tag]:
        if isinstance(step, _Fixed):
            fixed, pos = _fixed_at(step.reader, view, pos, end)
            if step.bools:
                fixed_list = list(fixed)
                for i in step.bools:
                    if fixed_list[i] > 1:
                        raise CodecError(f"invalid bool byte {fixed_list[i]}")
                    fixed_list[i] = fixed_list[i] == 1
                values += fixed_list
            else:
                values += fixed
        elif step.kind == "bytes":
            start, pos = _length_prefixed(view, pos, end)
            values.append(bytes(view[start:pos]))
        elif step.kind == "tuple[Entry, ...]":
            entries, pos = _read_entries(view, pos, end)
            values.append(entries)
        else:
            meta, pos = _read_meta(view, pos, end)
            values.append(meta)
    if pos != end:
        raise CodecError(f"{end - pos} trailing bytes")
    msg: Message = MESSAGE_TYPES[tag](*values)
    return msg


def decode_message(data: bytes | memoryview) -> Message:
    view = memoryview(data)
    return _decode_at(view, 0, len(view))


def encode_entry(e: Entry) -> bytes:
    out: list[bytes] = []
    _write_entry(out, e)
    return b"".join(out)


def entry_index(data: bytes | memoryview) -> int:
    """An encoded entry's index, its head checked against its length, without decoding it."""
    view = memoryview(data)
    (_, index, kind, n), pos = _fixed_at(_ENTRY_HEAD, view, 0, len(view))
    if kind not in _ENTRY_KINDS:
        raise CodecError(f"unknown entry kind {kind}")
    if pos + n != len(view):
        raise CodecError(f"entry of {n} data bytes in {len(view) - pos}")
    return int(index)


def decode_entry(data: bytes | memoryview) -> Entry:
    view = memoryview(data)
    entry, pos = _read_entry(view, 0, len(view))
    if pos != len(view):
        raise CodecError(f"{len(view) - pos} trailing bytes")
    return entry


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
    view = memoryview(data)
    meta, pos = _read_meta(view, 0, len(view))
    if pos != len(view):
        raise CodecError(f"{len(view) - pos} trailing bytes")
    return meta


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
        out.append(_U32.pack(sum(map(len, parts))))
        out += parts
    return b"".join(out)


def decode_batch(data: bytes | memoryview) -> list[Message]:
    view = memoryview(data)
    end = len(view)
    (count,), pos = _fixed_at(_U32, view, 0, end)
    messages = []
    for _ in range(count):
        start, pos = _length_prefixed(view, pos, end)
        messages.append(_decode_at(view, start, pos))
    if pos != end:
        raise CodecError(f"{end - pos} trailing bytes")
    return messages
