"""Exactly-once with pipelining (Raft dissertation §6.3): a session remembers the answers of
its recent seqs; what it no longer remembers is "expired", never "refused"."""

from __future__ import annotations

import json

import pytest

from controlplane import bugs
from controlplane.raft.messages import Entry
from controlplane.state.fleet import FleetState, validate
from controlplane.state.model import CommandError


def apply(state: FleetState, index: int, command: dict) -> dict:
    return state.apply(Entry(1, index, json.dumps(command).encode()))


def group(name: str, seq: int, ack: int = 1, client: str = "c", answered: bool = False) -> dict:
    command = {"type": "create_group", "group": name, "client": client, "seq": seq, "ack": ack}
    return {**command, "answered": True} if answered else command


def test_pipelined_commands_commit_in_any_order_and_retries_get_their_first_answer():
    s = FleetState()
    third = apply(s, 1, group("g3", 3))
    first = apply(s, 2, group("g1", 1))
    second = apply(s, 3, group("g2", 2))
    assert third["ok"] and first["ok"] and second["ok"]  # an earlier seq after a later one applies
    assert apply(s, 4, group("g1", 1)) == first  # a retry after later seqs: the original answer
    assert apply(s, 5, group("g3", 3)) == third
    assert sorted(s.groups) == ["g1", "g2", "g3"] and s.rejections == 0


def test_the_old_last_seq_sessions_refused_what_they_had_applied():
    with bugs.switched_on("session_last_seq"):
        s = FleetState()
        apply(s, 1, group("g1", 1))
        apply(s, 2, group("g2", 2))
        retry = apply(s, 3, group("g1", 1))
    assert not retry["ok"] and "older" in retry["error"] and "g1" in s.groups  # the defect


def test_acknowledged_seqs_are_forgotten_and_then_answered_expired_not_refused():
    s = FleetState()
    apply(s, 1, group("g1", 1))
    apply(s, 2, group("g2", 2, ack=2))  # the client has its answer to seq 1
    assert 1 not in s.sessions.by_client["c"].answers
    late = apply(s, 3, group("g1", 1))  # a delayed duplicate of seq 1
    assert late["ok"] is False and late["expired"] and "conflict" not in late
    assert s.rejections == 0 and s.sessions.expired_answers == 1


def test_an_expired_session_is_not_mistaken_for_a_new_client():
    s = FleetState(session_ttl_entries=10)
    apply(s, 1, group("g1", 1))
    apply(s, 2, group("g2", 2, ack=2))
    apply(s, 20, {"type": "checkpoint"})  # 18 entries later: the session is gone
    assert "c" not in s.sessions.by_client
    answer = apply(s, 21, group("g2", 2, ack=2, answered=True))
    assert answer["expired"] and s.rejections == 0 and "g2" in s.groups
    fresh = apply(s, 22, group("g9", 5, ack=5, client="newcomer"))  # gave up on 1-4, never answered
    assert fresh["ok"]


def test_a_seq_reused_for_a_different_command_is_refused():
    s = FleetState()
    apply(s, 1, group("g1", 1))
    other = apply(s, 2, group("g-other", 1))
    assert not other["ok"] and other["reused"] and "g-other" not in s.groups


def test_sessions_survive_snapshots_with_every_remembered_answer():
    s = FleetState()
    answers = [apply(s, i, group(f"g{i}", i)) for i in (1, 2, 3)]
    again = FleetState()
    again.restore(s.snapshot())
    assert [apply(again, 10 + i, group(f"g{i}", i)) for i in (1, 2, 3)] == answers


def test_sessions_expire_by_log_index():
    s = FleetState(session_ttl_entries=10)
    apply(s, 1, group("g", 1))
    apply(s, 5, group("h", 1, client="d"))
    assert set(s.sessions.by_client) == {"c", "d"}
    apply(s, 12, {"type": "checkpoint"})
    assert set(s.sessions.by_client) == {"d"}


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"client": 7, "seq": 1}, "client"),
        ({"client": "c", "seq": 0}, "seq"),
        ({"client": "c", "seq": True}, "seq"),
        ({"client": "c", "seq": 2**70}, "seq"),
        ({"client": "c", "seq": 3, "ack": 4}, "ack"),
        ({"client": "c", "seq": 3, "ack": "1"}, "ack"),
        ({"client": "c", "seq": 3, "answered": "yes"}, "answered"),
    ],
)
def test_session_fields_are_checked_before_proposing_and_again_on_apply(fields, name):
    command = {"type": "checkpoint", **fields}
    with pytest.raises(CommandError) as info:
        validate(command)
    assert info.value.field == name
    s = FleetState()
    answer = apply(s, 1, command)
    assert answer["ok"] is False and answer["field"] == name
