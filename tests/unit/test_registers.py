from controlplane.raft.messages import Entry
from controlplane.state.registers import Registers, put


def apply_all(sm, commands):
    return [sm.apply(Entry(1, i, c)) for i, c in enumerate(commands, start=1)]


def test_a_retried_command_applies_once_and_gets_the_first_answer():
    sm = Registers()
    first, again, other = apply_all(sm, [put("k", 1, "c1", 1), put("k", 1, "c1", 1), put("k", 2, "c2", 1)])
    assert again == first and sm.duplicates == 1
    assert other["ok"] and sm.data["k"] == 2
    stale = sm.apply(Entry(1, 9, put("k", 3, "c1", 0 + 1)))
    assert stale == first  # still the same (client, seq)
    older = apply_all(Registers(), [put("a", 1, "c", 2), put("a", 9, "c", 1)])[1]
    assert not older["ok"] and "older" in older["error"]


def test_bad_commands_are_rejected_deterministically():
    sm = Registers()
    answers = apply_all(
        sm, [b"{not json", b'{"op": "fly", "key": "x"}', b'{"op": "put", "key": 5, "value": 1}', put("k", 1, "c", -1)]
    )
    assert [a["ok"] for a in answers] == [False] * 4 and sm.rejected == 4 and sm.data == {}


def test_snapshot_round_trip_keeps_sessions():
    sm = Registers()
    apply_all(sm, [put("k", 1, "c1", 1)])
    again = Registers()
    again.restore(sm.snapshot())
    assert again.data == {"k": 1}
    assert again.apply(Entry(1, 5, put("k", 1, "c1", 1)))["index"] == 1  # deduplicated after restore
