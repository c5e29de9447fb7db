"""The codec's wire form: what replicas of different versions send each other and what a WAL
holds on disk. A change to these bytes must be deliberate (a new format), never a side effect
of making the codec faster."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.raft.codec import CodecError, decode_batch, decode_entry, encode_batch, encode_entry
from controlplane.raft.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    AppendEntriesResponse,
    ConfState,
    Entry,
    EntryKind,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    ReadIndexRequest,
    ReadIndexResponse,
    RequestVote,
    RequestVoteResponse,
    SnapshotMeta,
    TimeoutNow,
)

META = SnapshotMeta(7, 3, ConfState(frozenset({1, 2}), frozenset({4})))
ONE_OF_EACH = [
    RequestVote(1, 2, 3, 4, 5, True, False),
    RequestVoteResponse(2, 1, 3, True, True),
    AppendEntries(1, 2, 3, 4, 2, (Entry(3, 5, b"abc"), Entry(3, 6, b"\x00\x01", EntryKind.CONF_CHANGE)), 4),
    AppendEntriesResponse(2, 1, 3, False, 9, 7, 2),
    Heartbeat(1, 3, 3, 5, 11),
    HeartbeatResponse(3, 1, 3, 11),
    InstallSnapshot(1, 3, 3, META, 0, b"snap", True),
    InstallSnapshotResponse(3, 1, 3, 7, 4, True),
    TimeoutNow(1, 2, 3),
    ReadIndexRequest(2, 1, 3, b"ctx"),
    ReadIndexResponse(1, 2, 3, b"ctx", 9, True),
]
# Written by the field-at-a-time codec this format was defined with (u64 per int, one byte per
# bool, u32-prefixed bytes, u32-counted entries, u32 count and lengths in a batch).
ONE_OF_EACH_WIRE = bytes.fromhex(
    "0b0000002b00000000010000000000000002000000000000000300000000000000040000000000000005000000"
    "0000000001001b000000010200000000000000010000000000000003000000000000000101640000000201000000"
    "0000000002000000000000000300000000000000040000000000000002000000000000000200000003000000000000"
    "0005000000000000000003000000616263030000000000000006000000000000000102000000000104000000000000"
    "0032000000030200000000000000010000000000000003000000000000000009000000000000000700000000000000"
    "0200000000000000290000000401000000000000000300000000000000030000000000000005000000000000000b00"
    "00000000000021000000050300000000000000010000000000000003000000000000000b000000000000005a000000"
    "0601000000000000000300000000000000030000000000000007000000000000000300000000000000020000000100"
    "0000000000000200000000000000010000000400000000000000000000000000000004000000736e6170012a000000"
    "0703000000000000000100000000000000030000000000000007000000000000000400000000000000011900000008"
    "0100000000000000020000000000000003000000000000002000000009020000000000000001000000000000000300"
    "00000000000003000000637478290000000a010000000000000002000000000000000300000000000000030000006374"
    "78090000000000000001"
)


def test_every_message_type_keeps_its_wire_form():
    assert {type(m) for m in ONE_OF_EACH} == set(MESSAGE_TYPES)
    assert encode_batch(ONE_OF_EACH) == ONE_OF_EACH_WIRE
    decoded = decode_batch(ONE_OF_EACH_WIRE)
    assert decoded == ONE_OF_EACH
    for got, sent in zip(decoded, ONE_OF_EACH, strict=True):  # a bool comes back a bool, not 1
        assert [type(getattr(got, f)) for f in got.__slots__] == [type(getattr(sent, f)) for f in sent.__slots__]


def test_a_true_value_in_a_bool_field_is_written_as_one():
    assert encode_batch([AppendEntriesResponse(2, 1, 3, 2, 9)]) == encode_batch(
        [AppendEntriesResponse(2, 1, 3, True, 9)]
    )  # type: ignore[arg-type]


def test_an_entry_keeps_its_wire_form_on_disk():
    wire = bytes.fromhex("0300000000000000060000000000000001020000000001")
    entry = Entry(3, 6, b"\x00\x01", EntryKind.CONF_CHANGE)
    assert encode_entry(entry) == wire
    assert decode_entry(wire) == entry
    with pytest.raises(CodecError, match="truncated"):
        decode_entry(wire[:-1])
    with pytest.raises(CodecError, match="trailing"):
        decode_entry(wire + b"\0")
    with pytest.raises(CodecError, match="unknown entry kind"):
        decode_entry(wire[:16] + b"\x07" + wire[17:])


entries = st.lists(
    st.builds(
        Entry, st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.binary(max_size=40), st.sampled_from(EntryKind)
    ),
    max_size=4,
)
u64 = st.integers(0, 2**64 - 1)


@given(u64, u64, u64, entries, st.booleans(), st.binary(max_size=30))
def test_batches_of_any_messages_round_trip(a, b, c, ents, flag, blob):
    batch = [
        AppendEntries(a, b, c, a, b, tuple(ents), c),
        AppendEntriesResponse(b, a, c, flag, a, b, c),
        Heartbeat(a, b, c, a, b),
        RequestVote(a, b, c, a, b, flag, not flag),
        ReadIndexResponse(a, b, c, blob, a, flag),
    ]
    assert decode_batch(encode_batch(batch)) == batch
    assert decode_batch(encode_batch([])) == []


@given(st.binary(max_size=300))
def test_garbage_batches_are_refused_as_codec_errors(data):
    with contextlib.suppress(CodecError):
        decode_batch(data)


def test_damaged_batches_name_what_is_wrong():
    wire = encode_batch([AppendEntriesResponse(2, 1, 3, True, 9)])
    with pytest.raises(CodecError, match="truncated"):
        decode_batch(wire[:-1])
    with pytest.raises(CodecError, match="trailing"):
        decode_batch(wire + b"\0")
    success_at = 4 + 4 + 1 + 3 * 8  # count, length, tag, src/dst/term
    with pytest.raises(CodecError, match="invalid bool byte 2"):
        decode_batch(wire[:success_at] + b"\x02" + wire[success_at + 1 :])
    longer = bytearray(wire)
    longer[4] += 1  # the message claims a byte more than the batch holds
    with pytest.raises(CodecError, match="truncated"):
        decode_batch(bytes(longer))
