"""Raft §5.4 safety, plus the codec's refusal of bad bytes."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controlplane.raft import RaftConfig
from controlplane.raft.codec import CodecError, decode_message, encode_message
from controlplane.raft.core import RaftCore
from controlplane.raft.harness import Network
from controlplane.raft.messages import (
    MESSAGE_TYPES,
    AppendEntries,
    ConfState,
    Entry,
    EntryKind,
    InstallSnapshot,
    RequestVote,
    SnapshotMeta,
)


def test_committed_entries_survive_any_single_leader_crash():
    for victim in (1, 2, 3):
        net = Network(3, seed=victim)
        net.elect(1)
        for i in range(10):
            net.propose(1, b"c%d" % i)
        committed = list(net.replicas[1].applied)
        net.isolate(victim)
        net.tick(times=40)
        leader = net.leader()
        assert leader is not None and leader != victim
        net.propose(leader, b"later")
        assert net.replicas[leader].applied[: len(committed)] == committed


def test_a_restarted_node_keeps_its_vote():
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, pre_vote=False))
    core = net.core(3)
    core.step(RequestVote(1, 3, 5, 100, 100))
    net.replicas[3].process()
    net.replicas[3].restart()
    again = net.core(3)
    assert (again.term, again.vote) == (5, 1)
    again.step(RequestVote(2, 3, 5, 100, 100))
    assert not any(getattr(m, "granted", False) for m in again.ready().messages)


def test_stale_term_messages_are_ignored_and_answered_with_the_current_term():
    net = Network(3)
    net.elect(1)
    net.elect(2)
    old = AppendEntries(1, 3, 2, 0, 0, (), 0)
    before = net.core(3).log.last_index()
    net.core(3).step(old)
    rd = net.core(3).ready()
    assert net.core(3).log.last_index() == before
    assert any(m.term == net.core(3).term and m.dst == 1 for m in rd.messages)


def test_config_is_validated():
    with pytest.raises(ValueError, match="node_id"):
        RaftConfig(node_id=0)
    with pytest.raises(ValueError, match="election_ticks"):
        RaftConfig(node_id=1, election_ticks=1, heartbeat_ticks=1)
    with pytest.raises(ValueError, match="max_inflight_msgs"):
        RaftConfig(node_id=1, max_inflight_msgs=0)


def test_core_refuses_a_log_with_gaps():
    with pytest.raises(Exception, match="contiguous"):
        RaftCore(RaftConfig(node_id=1), entries=[Entry(1, 1), Entry(1, 3)])


entries = st.lists(
    st.builds(Entry, st.integers(0, 2**40), st.integers(0, 2**40), st.binary(max_size=64), st.sampled_from(EntryKind)),
    max_size=5,
)


@given(
    st.integers(1, 2**32),
    st.integers(1, 2**32),
    st.integers(0, 2**50),
    entries,
    st.binary(max_size=100),
    st.booleans(),
)
def test_codec_round_trips_every_message(src, dst, term, ents, blob, flag):
    meta = SnapshotMeta(term, term, ConfState(frozenset({src}), frozenset({dst}) - {src}))
    msgs = [
        RequestVote(src, dst, term, term, term, flag, not flag),
        AppendEntries(src, dst, term, term, term, tuple(ents), term),
        InstallSnapshot(src, dst, term, meta, 0, blob, flag),
    ]
    for m in msgs:
        assert decode_message(encode_message(m)) == m


def test_codec_covers_every_message_type():
    assert len({t.__name__ for t in MESSAGE_TYPES}) == 11


@given(st.binary(max_size=200))
def test_codec_never_crashes_on_garbage(data):
    with contextlib.suppress(CodecError):
        decode_message(data)


def test_codec_rejects_truncation_and_trailing_bytes():
    wire = encode_message(AppendEntries(1, 2, 3, 4, 5, (Entry(3, 5, b"abc"),), 4))
    with pytest.raises(CodecError, match="truncated"):
        decode_message(wire[:-1])
    with pytest.raises(CodecError, match="trailing"):
        decode_message(wire + b"\0")
    with pytest.raises(CodecError, match="unknown message tag"):
        decode_message(b"\xff")
