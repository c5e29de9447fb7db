"""Exactly-once with pipelining (Raft dissertation §6.3): a client opens a session (the state
names it), a session remembers the answers of its recent seqs; what it no longer remembers is
"expired", never "refused"."""

from __future__ import annotations

import json

import pytest

from controlplane import bugs
from controlplane.raft.messages import Entry
from controlplane.state.fleet import FleetState, validate
from controlplane.state.model import CommandError


def apply(state: FleetState, index: int, command: dict) -> dict:
    return state.apply(Entry(1, index, json.dumps(command).encode()))


def opened(state: FleetState, index: int) -> str:
    answer = apply(state, index, {"type": "open_session"})
    assert answer["ok"] and answer["session"] == f"s{index}"
    return answer["session"]


def group(name: str, seq: int, client: str, ack: int = 1) -> dict:
    return {"type": "create_group", "group": name, "client": client, "seq": seq, "ack": ack}


def test_pipelined_commands_commit_in_any_order_and_retries_get_their_first_answer():
    s = FleetState()
    c = opened(s, 1)
    third = apply(s, 2, group("g3", 3, c))
    first = apply(s, 3, group("g1", 1, c))
    second = apply(s, 4, group("g2", 2, c))
    assert third["ok"] and first["ok"] and second["ok"]  # an earlier seq after a later one applies
    assert apply(s, 5, group("g1", 1, c)) == first  # a retry after later seqs: the original answer
    assert apply(s, 6, group("g3", 3, c)) == third
    assert sorted(s.groups) == ["g1", "g2", "g3"] and s.rejections == 0


def test_the_old_last_seq_sessions_refused_what_they_had_applied():
    with bugs.switched_on("session_last_seq"):
        s = FleetState()
        c = opened(s, 1)
        apply(s, 2, group("g1", 1, c))
        apply(s, 3, group("g2", 2, c))
        retry = apply(s, 4, group("g1", 1, c))
    assert not retry["ok"] and "older" in retry["error"] and "g1" in s.groups  # the defect


def test_acknowledged_seqs_are_forgotten_and_then_answered_expired_not_refused():
    s = FleetState()
    c = opened(s, 1)
    apply(s, 2, group("g1", 1, c))
    apply(s, 3, group("g2", 2, c, ack=2))  # the client has its answer to seq 1
    assert 1 not in s.sessions.by_client[c].answers
    late = apply(s, 4, group("g1", 1, c))  # a delayed duplicate of seq 1
    assert late["ok"] is False and late["expired"] and "conflict" not in late
    assert s.rejections == 0 and s.sessions.expired_answers == 1


def test_a_forgotten_session_is_never_taken_for_a_new_one():
    """Found by the simulator: a client whose first command applied but whose answer was
    lost retried after its session expired, and the command applied twice."""
    s = FleetState(session_ttl_entries=10)
    c = opened(s, 1)
    first = apply(s, 2, group("g1", 1, c))  # applied; say the answer is lost
    apply(s, 20, {"type": "checkpoint"})  # 18 entries later: the session is gone
    assert c not in s.sessions.by_client
    retry = apply(s, 21, group("g1", 1, c))
    assert first["ok"] and retry["expired"] and s.rejections == 0  # unknown, not applied again
    never = apply(s, 22, group("g9", 1, "s999"))  # a name the state never gave out
    assert never["expired"] and "g9" not in s.groups
    assert opened(s, 23) != c  # a new session has a new name


def test_an_idempotency_key_is_its_own_session_started_on_first_use():
    s = FleetState()
    command = {"type": "create_group", "group": "g", "client": "key:abc", "seq": 1, "ack": 1}
    first = apply(s, 1, command)
    assert first["ok"] and apply(s, 2, command) == first


def test_a_seq_reused_for_a_different_command_is_refused():
    s = FleetState()
    c = opened(s, 1)
    apply(s, 2, group("g1", 1, c))
    other = apply(s, 3, group("g-other", 1, c))
    assert not other["ok"] and other["reused"] and "g-other" not in s.groups


def test_sessions_survive_snapshots_with_every_remembered_answer():
    s = FleetState()
    c = opened(s, 1)
    answers = [apply(s, 1 + i, group(f"g{i}", i, c)) for i in (1, 2, 3)]
    again = FleetState()
    again.restore(s.snapshot())
    assert [apply(again, 10 + i, group(f"g{i}", i, c)) for i in (1, 2, 3)] == answers


def test_sessions_expire_by_log_index():
    s = FleetState(session_ttl_entries=10)
    c, d = opened(s, 1), opened(s, 5)
    apply(s, 2, group("g", 1, c))
    apply(s, 6, group("h", 1, d))
    assert set(s.sessions.by_client) == {c, d}
    apply(s, 13, {"type": "checkpoint"})
    assert set(s.sessions.by_client) == {d}


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"client": 7, "seq": 1}, "client"),
        ({"client": "c", "seq": 0}, "seq"),
        ({"client": "c", "seq": True}, "seq"),
        ({"client": "c", "seq": 2**70}, "seq"),
        ({"client": "c", "seq": 3, "ack": 4}, "ack"),
        ({"client": "c", "seq": 3, "ack": "1"}, "ack"),
        ({"type": "open_session", "client": "c", "seq": 1}, "client"),
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
