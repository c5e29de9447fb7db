"""The fleet state machine: validation, transitions, conflicts, exactly-once, scheduler,
snapshots, and determinism under replicated command streams with faults (hypothesis)."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.raft.harness import Network
from controlplane.raft.messages import Entry
from controlplane.replica import check
from controlplane.state.fleet import CHECKED_KEPT, FleetState, encode, validate
from controlplane.state.model import CommandError
from controlplane.state.telemetry import encode_entry, normalize


def run(state: FleetState, *commands: dict, start: int = 1) -> list[dict]:
    return [state.apply(Entry(1, i, json.dumps(c).encode())) for i, c in enumerate(commands, start=start)]


def run_bytes(state: FleetState, *commands: bytes, start: int = 1) -> list[dict]:
    return [state.apply(Entry(1, i, data)) for i, data in enumerate(commands, start=start)]


def base() -> FleetState:
    s = FleetState()
    run(
        s,
        {"type": "register_station", "station": "alpha"},
        {"type": "register_uav", "uav": "u1", "home_station": "alpha", "lat": 47.0, "lon": 8.0, "battery": 90},
        {"type": "register_uav", "uav": "u2", "home_station": "alpha", "lat": 47.5, "lon": 8.5, "battery": 40},
    )
    return s


@pytest.mark.parametrize(
    ("command", "field"),
    [
        ({"type": "launch"}, "type"),
        ({"type": "register_uav", "uav": "u9"}, "home_station"),
        ({"type": "register_uav", "uav": "has space", "home_station": "a"}, "uav"),
        ({"type": "create_mission", "mission": "m", "waypoints": []}, "waypoints"),
        (
            {"type": "create_mission", "mission": "m", "waypoints": [{"lat": 91, "lon": 0, "alt": 10}]},
            "waypoints[0].lat",
        ),
        ({"type": "create_mission", "mission": "m", "waypoints": [{"lat": 1, "lon": 0}]}, "waypoints[0].alt"),
        ({"type": "update_uav", "uav": "u1", "battery": 130}, "battery"),
        ({"type": "update_uav", "uav": "u1", "status": "flying"}, "status"),
        ({"type": "update_uav", "uav": "u1", "expected_version": 0}, "expected_version"),
        ({"type": "update_uav", "uav": "u1", "status": {}}, "status"),  # found by schemathesis: unhashable
        ({"type": ["register_uav"]}, "type"),
    ],
)
def test_invalid_commands_are_refused_naming_the_field(command, field):
    with pytest.raises(CommandError) as info:
        validate(command)
    assert info.value.field == field
    s = base()
    before = s.digest()
    [answer] = run(s, command, start=10)
    assert answer["ok"] is False and answer["field"] == field  # re-validated on apply, recorded
    assert s.digest() == before


def test_scheduler_assigns_by_priority_battery_and_distance():
    s = base()
    answers = run(
        s,
        {"type": "create_mission", "mission": "low", "waypoints": [{"lat": 47.5, "lon": 8.5, "alt": 50}]},
        {
            "type": "create_mission",
            "mission": "high",
            "priority": 5,
            "min_battery": 50,
            "waypoints": [{"lat": 47.5, "lon": 8.5, "alt": 50}],
        },
        start=10,
    )
    assert all(a["ok"] for a in answers)
    # "low" came first and went to the nearest UAV (u2); "high" needs 50% battery: u1.
    assert s.missions["low"].uav == "u2" and s.missions["high"].uav == "u1"
    assert s.uavs["u1"].status.value == "in_mission"
    run(
        s,
        {"type": "set_mission_status", "mission": "high", "status": "active"},
        {"type": "set_mission_status", "mission": "high", "status": "completed"},
        start=20,
    )
    assert s.uavs["u1"].status.value == "idle" and s.uavs["u1"].mission is None


def test_only_legal_mission_transitions():
    s = base()
    run(s, {"type": "create_mission", "mission": "m", "waypoints": [{"lat": 0, "lon": 0, "alt": 1}]}, start=10)
    [bad] = run(s, {"type": "set_mission_status", "mission": "m", "status": "completed"}, start=11)
    assert not bad["ok"] and "cannot become completed" in bad["error"]
    [gone] = run(s, {"type": "delete_mission", "mission": "m"}, start=12)
    assert not gone["ok"]  # assigned missions are aborted before deletion


def test_expected_version_conflicts():
    s = base()
    v = s.uavs["u1"].version
    first, second = run(
        s,
        {"type": "update_uav", "uav": "u1", "battery": 80, "expected_version": v},
        {"type": "update_uav", "uav": "u1", "battery": 70, "expected_version": v},
        start=10,
    )
    assert first["ok"] and not second["ok"] and second["conflict"]
    assert s.uav("u1")["battery"] == 80


def test_a_retried_command_applies_once():
    s = base()
    cmd = {"type": "create_group", "group": "g1", "client": "key:c1", "seq": 1}
    a, b = run(s, cmd, cmd, start=10)
    assert a == b and a["ok"]
    [again] = run(s, {"type": "create_group", "group": "g1", "client": "key:c2", "seq": 1}, start=12)
    assert not again["ok"]  # a different client really does try to create it twice


def test_groups_membership():
    s = base()
    answers = run(
        s,
        {"type": "create_group", "group": "g"},
        {"type": "add_member", "group": "g", "uav": "u1"},
        {"type": "add_member", "group": "g", "uav": "ghost"},
        {"type": "remove_member", "group": "g", "uav": "u2"},
        start=10,
    )
    assert [a["ok"] for a in answers] == [True, True, False, False]
    run(s, {"type": "delete_uav", "uav": "u2"}, start=20)
    assert s.groups["g"].members == {"u1"}
    run(s, {"type": "dissolve_group", "group": "g"}, start=21)
    assert "g" not in s.groups


def test_snapshot_restores_exactly():
    s = base()
    run(
        s,
        {"type": "create_mission", "mission": "m", "waypoints": [{"lat": 1, "lon": 2, "alt": 3}]},
        {"type": "create_group", "group": "g", "client": "key:c", "seq": 4},
        start=10,
    )
    again = FleetState()
    again.restore(s.snapshot())
    assert again.digest() == s.digest() and again.snapshot() == s.snapshot()
    [dup] = run(again, {"type": "create_group", "group": "g", "client": "key:c", "seq": 4}, start=30)
    assert dup["ok"]  # the session table came back too: the retry gets the first answer


def test_a_captured_snapshot_encodes_the_state_as_it_was_then():
    s = base()
    run(
        s,
        {"type": "create_mission", "mission": "m", "waypoints": [{"lat": 1, "lon": 2, "alt": 3}]},
        {"type": "create_group", "group": "g"},
        {"type": "add_member", "group": "g", "uav": "u1"},
        {"type": "control_cas", "key": "k", "value": "v1", "if_version": 0},
        start=10,
    )
    then = s.snapshot()
    encode = s.prepare_snapshot()
    # Everything a snapshot holds, changed in place after the capture: records, columns
    # (telemetry writes them in place), group members, control records, sessions, counters.
    run(
        s,
        {"type": "update_uav", "uav": "u1", "lat": 10.0, "status": "charging", "client": "key:c", "seq": 1},
        {"type": "update_uav", "uav": "u2", "battery": 5},
        {"type": "set_mission_status", "mission": "m", "status": "aborted"},
        {"type": "add_member", "group": "g", "uav": "u2"},
        {"type": "control_cas", "key": "k", "value": "v2", "if_version": 1},
        {"type": "register_station", "station": "bravo"},
        {"type": "register_uav", "uav": "u3", "home_station": "bravo"},
        {"type": "update_uav", "uav": "nope"},
        start=20,
    )
    s.columns.floats["alt"][:] = 123.0
    assert s.snapshot() != then
    assert encode() == then


STATIONS = ["alpha", "bravo"]
UAVS = [f"u{i}" for i in range(4)]
commands = st.one_of(
    st.builds(lambda s: {"type": "register_station", "station": s}, st.sampled_from(STATIONS)),
    st.builds(
        lambda u, s, b: {"type": "register_uav", "uav": u, "home_station": s, "battery": b},
        st.sampled_from(UAVS),
        st.sampled_from(STATIONS),
        st.integers(0, 100),
    ),
    st.builds(
        lambda u, b, stat: {"type": "update_uav", "uav": u, "battery": b, "status": stat},
        st.sampled_from(UAVS),
        st.integers(-5, 105),
        st.sampled_from(["idle", "charging", "offline", "bogus"]),
    ),
    st.builds(
        lambda m, p, lat: {
            "type": "create_mission",
            "mission": m,
            "priority": p,
            "waypoints": [{"lat": lat, "lon": 8.0, "alt": 30}],
        },
        st.sampled_from(["m1", "m2", "m3"]),
        st.integers(0, 3),
        st.floats(-100, 100, allow_nan=False),
    ),
    st.builds(
        lambda m, stat: {"type": "set_mission_status", "mission": m, "status": stat},
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from(["active", "completed", "aborted", "pending"]),
    ),
    st.builds(
        lambda g, u: {"type": "add_member", "group": g, "uav": u}, st.sampled_from(["g1"]), st.sampled_from(UAVS)
    ),
    st.just({"type": "create_group", "group": "g1"}),
    # telemetry batches, with unknown UAVs, stale and repeated reports
    st.builds(
        lambda reports, auto: {"telemetry": reports, "auto_register": auto},
        st.lists(
            st.builds(
                lambda u, t, q, b: {"uav": u, "time": float(t), "seq": q, "battery": b, "station": "alpha"},
                st.sampled_from([*UAVS, "u9"]),
                st.integers(0, 4),
                st.integers(0, 2),
                st.integers(0, 100),
            ),
            min_size=1,
            max_size=6,
        ),
        st.booleans(),
    ),
)


def entry_bytes(cmd: dict, seq: int) -> bytes:
    if "telemetry" in cmd:
        table, _ = normalize(cmd["telemetry"])
        return encode_entry(table, auto_register=cmd["auto_register"])
    return json.dumps({**cmd, "client": "key:c", "seq": seq}).encode()


@settings(max_examples=40, deadline=None)
@given(st.lists(commands, min_size=1, max_size=25), st.integers(0, 2**16), st.lists(st.booleans(), max_size=25))
def test_replicas_agree_under_faults_and_retries_apply_once(cmds, seed, drops):
    """Any command sequence (telemetry batches included) on 3 replicas, with a follower cut
    off part of the time and every command proposed twice (a client retry), gives identical
    digests and answers everywhere; the leader applies the commands it checked before
    proposing them as it does in production (Replica.propose_many), the others read bytes."""
    net = Network(3, seed=seed)
    machines = {nid: FleetState() for nid in net.replicas}
    net.elect(1)
    for i, cmd in enumerate(cmds):
        data = entry_bytes(cmd, i + 1)
        if i < len(drops) and drops[i]:
            net.isolate(3)
        for _ in range(2):  # the command and a client's retry of it
            parsed, _refused = check(data)
            if parsed is not None:
                machines[1].checked(data, parsed)
            net.core(1).propose(data)
        net.settle()
        net.heal()
    net.tick(times=3)
    digests, answers = set(), {}
    for nid, replica in net.replicas.items():
        entries = [e for e in replica.core.log.entries if e.data and e.kind.value == 0]
        answers[nid] = [machines[nid].apply(e) for e in entries]
        digests.add(machines[nid].digest())
        assert_idle_rows_match_the_records(machines[nid])
    assert len(digests) == 1
    assert answers[1] == answers[2] == answers[3]
    # The same log with every retry removed gives the same state: retries changed nothing.
    # (A retry is the copy right after the original; equal bytes proposed at another time,
    # such as the same telemetry batch before and after its station exists, are not retries.)
    previous, applied_once = b"", FleetState()
    for e in net.replicas[1].core.log.entries:
        if e.data and e.kind.value == 0:
            if e.data != previous:
                applied_once.apply(e)
            previous = e.data
    assert machines[1].digest() == applied_once.digest()


def test_a_command_checked_before_proposing_is_applied_from_its_check_once():
    state = base()
    data = encode({"type": "create_group", "group": "g"})
    parsed, refused = check(data)
    assert refused is None and parsed is not None
    state.checked(data, {**parsed, "group": "from-the-check"})  # which one applies shows
    [first] = run_bytes(state, data, start=10)
    assert first["ok"] and "from-the-check" in state.groups and "g" not in state.groups
    [again] = run_bytes(state, data, start=11)
    assert again["ok"] and "g" in state.groups  # the check is used once; then the bytes
    assert check(b'{"type": "create_group"}') == (
        None,
        {"ok": False, "field": "group", "error": "is required", "conflict": False, "not_found": False},
    )


def test_checked_commands_a_deposed_leader_never_applies_are_not_kept_without_bound():
    state = base()
    for i in range(CHECKED_KEPT + 10):
        data = encode({"type": "create_group", "group": f"g{i}"})
        state.checked(data, json.loads(data))
    assert len(state._checked) <= CHECKED_KEPT
    [answer] = run_bytes(state, encode({"type": "create_group", "group": "g1"}), start=10)
    assert answer["ok"] and "g1" in state.groups


def test_encode_validates():
    with pytest.raises(CommandError, match="type"):
        encode({"type": "nope"})
    assert json.loads(encode({"type": "create_group", "group": "g"}))["group"] == "g"


def test_snapshot_is_arrow_ipc_and_damage_is_refused():
    from controlplane.state.snapshot_codec import decode_tables

    s = base()
    data = s.snapshot()
    tables = decode_tables(data)
    assert tables["uavs"].num_rows == 2 and tables["uavs"].column("id").to_pylist() == ["u1", "u2"]
    with pytest.raises(ValueError, match="not a fleet snapshot"):
        FleetState().restore(b"JUNK" + data[4:])
    with pytest.raises(ValueError, match="truncated"):
        FleetState().restore(data[: len(data) // 2])


def test_queries():
    s = base()
    run(
        s,
        {"type": "register_station", "station": "bravo"},
        {"type": "register_uav", "uav": "u3", "home_station": "bravo", "lat": 10.0, "lon": 10.0},
        {"type": "create_mission", "mission": "m", "waypoints": [{"lat": 47, "lon": 8, "alt": 5}]},
        {"type": "create_group", "group": "g"},
        {"type": "add_member", "group": "g", "uav": "u3"},
        start=10,
    )
    assert [u["id"] for u in s.uavs_where(station="alpha")] == ["u1", "u2"]
    assert [u["id"] for u in s.uavs_where(bbox=(46.5, 7.5, 47.2, 8.2))] == ["u1"]
    assert [u["id"] for u in s.uavs_where(status="in_mission")] == [s.missions["m"].uav]
    assert [m["id"] for m in s.missions_by_status("assigned")] == ["m"]
    assert s.group_members("g") == ["u3"]
    assert s.uavs_where(bbox=(50, 0, 40, 1)) == []  # north of south: holds nothing
    # Across the antimeridian: from 170 E eastwards to 11 E holds lon 10; to 9 E does not.
    assert [u["id"] for u in s.uavs_where(bbox=(0, 170, 20, 11))] == ["u3"]
    assert s.uavs_where(bbox=(0, 170, 20, 9)) == []
    with pytest.raises(CommandError, match="group"):
        s.group_members("nope")
    with pytest.raises(ValueError):
        s.missions_by_status("flying")


def assert_idle_rows_match_the_records(state: FleetState) -> None:
    """The scheduler's idle column and its count say what the UAV records say."""
    idle = {u.row for u in state.uavs.values() if u.status.value == "idle" and u.mission is None}
    assert set(np.flatnonzero(state.columns.idle).tolist()) == idle
    assert state.columns.idle_count == len(idle)


def _rule_assignments(uavs: dict[str, dict], missions: list[dict]) -> dict[str, str]:
    """The scheduling rule as documented, by brute force: missions by priority (highest
    first) then age, each to the idle UAV with enough battery nearest its first waypoint,
    then fullest battery, then lowest id."""
    from controlplane.state.model import great_circle_m

    idle = {u for u, r in uavs.items() if r["status"] == "idle"}
    out: dict[str, str] = {}
    for m in sorted(missions, key=lambda m: (-m["priority"], m["order"])):
        lat, lon = m["waypoints"][0]["lat"], m["waypoints"][0]["lon"]
        able = [u for u in idle if uavs[u]["battery"] >= m["min_battery"]]
        if not able:
            continue
        chosen = min(
            able,
            key=lambda u: (float(great_circle_m(uavs[u]["lat"], uavs[u]["lon"], lat, lon)), -uavs[u]["battery"], u),
        )
        idle.discard(chosen)
        out[m["mission"]] = chosen
    return out


@settings(max_examples=60, deadline=None)
@given(
    uavs=st.lists(
        st.tuples(st.sampled_from([47.0, 47.5]), st.sampled_from([8.0, 8.5]), st.sampled_from([40, 90])),
        min_size=1,
        max_size=12,
    ),
    deleted=st.sets(st.integers(0, 11), max_size=4),
    missions=st.lists(
        st.tuples(st.integers(0, 2), st.sampled_from([0, 50, 95]), st.sampled_from([47.0, 47.5])), max_size=10
    ),
    through_snapshot=st.booleans(),
)
def test_the_scheduler_follows_its_rule_whatever_the_row_order(uavs, deleted, missions, through_snapshot):
    """Ties on purpose (few positions and batteries); ids registered in reverse order and some
    deleted and registered again, so rows are not in id order; optionally via a snapshot.
    Every UAV idle while missions are created one by one."""
    s = FleetState()
    commands: list[dict] = [{"type": "register_station", "station": "a"}]
    ids = [f"u{i:02d}" for i in range(len(uavs))]
    for uid, (lat, lon, battery) in reversed(list(zip(ids, uavs, strict=True))):
        commands.append(
            {"type": "register_uav", "uav": uid, "home_station": "a", "lat": lat, "lon": lon, "battery": battery}
        )
    for i in sorted(deleted):
        if i < len(ids):
            commands.append({"type": "delete_uav", "uav": ids[i]})
    for i in sorted(deleted, reverse=True):  # back in other rows
        if i < len(ids):
            lat, lon, battery = uavs[i]
            commands.append(
                {"type": "register_uav", "uav": ids[i], "home_station": "a", "lat": lat, "lon": lon, "battery": battery}
            )
    assert all(a["ok"] for a in run(s, *commands))
    if through_snapshot:
        again = FleetState()
        again.restore(s.snapshot())
        s = again
    assert_idle_rows_match_the_records(s)
    wanted = [
        {"type": "create_mission", "mission": f"m{j}", "priority": prio, "min_battery": minb,
         "waypoints": [{"lat": lat, "lon": 8.25, "alt": 10}], "order": j}
        for j, (prio, minb, lat) in enumerate(missions)
    ]  # fmt: skip
    records = {uid: s.uav(uid) for uid in ids}
    # Each creation schedules at once, over every idle UAV and every mission still pending.
    expected: dict[str, str] = {}
    for j, mission in enumerate(wanted):
        [answer] = run(s, {k: v for k, v in mission.items() if k != "order"}, start=1000 + j)
        assert answer["ok"]
        idle = {u: r for u, r in records.items() if u not in expected.values()}
        expected.update(_rule_assignments(idle, [m for m in wanted[: j + 1] if m["mission"] not in expected]))
    assert {m: r.uav for m, r in s.missions.items() if r.uav is not None} == expected


def test_ids_refuse_exactly_the_characters_python_calls_whitespace():
    """ident() searches with a regular expression; it must refuse what str.isspace() refuses,
    every character of Unicode, or replicas of two versions could answer differently."""
    from controlplane.state.model import WHITESPACE

    differ = [c for c in range(sys.maxunicode + 1) if bool(WHITESPACE.search(chr(c))) != chr(c).isspace()]
    assert differ == []
    with pytest.raises(CommandError, match="without spaces"):
        validate({"type": "register_station", "station": "al\u2003pha"})  # an em space


# (lat, lon, battery) per UAV and (priority, min_battery, lat) per mission: few values, so ties.
CHARGED_FLEETS = st.lists(
    st.tuples(st.sampled_from([47.0, 47.5]), st.sampled_from([8.0, 8.5]), st.sampled_from([40.0, 60.0, 95.0])),
    min_size=1,
    max_size=12,
)
WAITING_MISSIONS = st.lists(
    st.tuples(st.integers(0, 2), st.sampled_from([10, 50, 95]), st.sampled_from([47.0, 47.5])), max_size=10
)


@settings(max_examples=60, deadline=None)
@given(uavs=CHARGED_FLEETS, missions=WAITING_MISSIONS)
def test_one_scheduling_pass_assigns_many_missions_by_the_rule(uavs, missions):
    """Every mission waits (no UAV has the battery yet), then one telemetry batch charges
    every UAV: the one scheduling pass that follows gives out many missions, each UAV at most
    once, by the same rule as one at a time. Rows are out of id order (registered in reverse)."""
    from controlplane.state.telemetry import encode_entry, normalize

    s = FleetState()
    ids = [f"u{i:02d}" for i in range(len(uavs))]
    commands: list[dict] = [{"type": "register_station", "station": "a"}]
    for uid, (lat, lon, _) in reversed(list(zip(ids, uavs, strict=True))):
        commands.append({"type": "register_uav", "uav": uid, "home_station": "a", "lat": lat, "lon": lon, "battery": 0})
    wanted = [
        {"type": "create_mission", "mission": f"m{j}", "priority": prio, "min_battery": minb,
         "waypoints": [{"lat": lat, "lon": 8.25, "alt": 10}], "order": j}
        for j, (prio, minb, lat) in enumerate(missions)
    ]  # fmt: skip
    commands += [{k: v for k, v in m.items() if k != "order"} for m in wanted]
    assert all(a["ok"] for a in run(s, *commands))
    assert all(m.uav is None for m in s.missions.values())  # nobody could take any yet

    reports = [
        {"uav": uid, "time": 1.0, "seq": 1, "lat": lat, "lon": lon, "battery": battery}
        for uid, (lat, lon, battery) in zip(ids, uavs, strict=True)
    ]
    table, rejected = normalize(reports, station="a")
    assert rejected == []
    assert s.apply(Entry(1, 10_000, encode_entry(table, auto_register=False)))["ok"]

    charged = {
        uid: {"status": "idle", "lat": lat, "lon": lon, "battery": battery}
        for uid, (lat, lon, battery) in zip(ids, uavs, strict=True)
    }
    expected = _rule_assignments(charged, wanted)
    assert {m: r.uav for m, r in s.missions.items() if r.uav is not None} == expected
    assert all(s.uavs[u].mission == m for m, u in expected.items())


@settings(max_examples=60, deadline=None)
@given(uavs=CHARGED_FLEETS, missions=WAITING_MISSIONS)
def test_uavs_registering_one_by_one_while_missions_wait_take_them_by_the_rule(uavs, missions):
    """Missions first, then UAVs one at a time: each registration schedules with the new UAV
    idle beside those no mission fitted (often it alone, as in a fleet's start or a restart's
    replay), by the same rule as the brute force."""
    s = FleetState()
    wanted = [
        {"type": "create_mission", "mission": f"m{j}", "priority": prio, "min_battery": minb,
         "waypoints": [{"lat": lat, "lon": 8.25, "alt": 10}], "order": j}
        for j, (prio, minb, lat) in enumerate(missions)
    ]  # fmt: skip
    commands = [
        {"type": "register_station", "station": "a"},
        *({k: v for k, v in m.items() if k != "order"} for m in wanted),
    ]
    assert all(a["ok"] for a in run(s, *commands))
    registered: dict[str, dict] = {}
    expected: dict[str, str] = {}
    for i, (lat, lon, battery) in enumerate(uavs):
        uid = f"u{len(uavs) - i:02d}"  # ids falling: rows out of id order
        [answer] = run(
            s,
            {"type": "register_uav", "uav": uid, "home_station": "a", "lat": lat, "lon": lon, "battery": battery},
            start=1000 + i,
        )
        assert answer["ok"]
        registered[uid] = {"status": "idle", "lat": lat, "lon": lon, "battery": battery}
        idle = {u: r for u, r in registered.items() if u not in expected.values()}
        expected.update(_rule_assignments(idle, [m for m in wanted if m["mission"] not in expected]))
        assert {m: r.uav for m, r in s.missions.items() if r.uav is not None} == expected
        assert_idle_rows_match_the_records(s)


def test_a_mission_no_idle_uav_could_take_is_assigned_as_soon_as_one_can():
    """Scheduling passes that could assign nothing are skipped; each change that can make an
    assignment possible must bring the next pass: a battery rising, a UAV turning idle, a
    mission turning pending again."""
    s = base()  # u1 (battery 90) and u2 (40), both idle
    far = [{"lat": 47.0, "lon": 8.0, "alt": 10}]
    answers = run(
        s,
        {"type": "update_uav", "uav": "u1", "status": "charging"},
        {"type": "create_mission", "mission": "m1", "min_battery": 80, "waypoints": far},
        {"type": "register_station", "station": "bravo"},  # changes nothing the scheduler reads
        {"type": "update_uav", "uav": "u2", "lat": 47.0, "lon": 8.0},  # nor does a move
        start=10,
    )
    assert all(a["ok"] for a in answers) and s.missions["m1"].status.value == "pending"
    run(s, {"type": "update_uav", "uav": "u2", "battery": 85}, start=20)  # a battery rises
    assert s.missions["m1"].uav == "u2"
    run(s, {"type": "create_mission", "mission": "m2", "min_battery": 80, "waypoints": far}, start=21)
    assert s.missions["m2"].status.value == "pending"  # u1 charges: not idle
    run(s, {"type": "update_uav", "uav": "u1", "status": "idle"}, start=22)  # a UAV turns idle
    assert s.missions["m2"].uav == "u1"
    run(
        s,
        {"type": "set_mission_status", "mission": "m1", "status": "active"},
        {"type": "update_uav", "uav": "u2", "status": "charging"},  # its mission fails, u2 charges
        {"type": "create_mission", "mission": "m3", "min_battery": 95, "waypoints": far},
        start=30,
    )
    assert s.missions["m1"].status.value == "failed" and s.missions["m3"].status.value == "pending"
    run(s, {"type": "set_mission_status", "mission": "m2", "status": "pending"}, start=40)  # back to pending
    assert s.missions["m2"].uav == "u1" and s.missions["m2"].status.value == "assigned"
    run(s, {"type": "update_uav", "uav": "u2", "status": "idle"}, start=41)  # idle, but 85 < 95
    assert s.missions["m3"].status.value == "pending"
    table, rejected = normalize([{"uav": "u2", "time": 1.0, "seq": 1, "battery": 99.0}], station="alpha")
    assert rejected == []
    assert s.apply(Entry(1, 50, encode_entry(table, auto_register=False)))["ok"]  # telemetry charges u2
    assert s.missions["m3"].uav == "u2"
    run(
        s,
        {"type": "create_mission", "mission": "m4", "min_battery": 100, "waypoints": far},  # no UAV here
        {"type": "register_uav", "uav": "u3", "home_station": "alpha", "battery": 99.5},
        start=60,
    )
    assert s.uavs["u3"].status.value == "idle" and s.missions["m4"].status.value == "pending"
    run(s, {"type": "update_uav", "uav": "u2", "status": "charging"}, start=62)  # m3 pending again, alone
    assert s.missions["m3"].uav == "u3"


@pytest.mark.parametrize(
    "box", [[None, 0, 1, 1], [float("nan"), 0, 1, 1], [0, float("inf"), 1, 1], ["47", 0, 1, 1], [True, 0, 1, 1]]
)
def test_a_bbox_that_is_not_four_finite_numbers_is_refused_naming_it(box):
    from controlplane.state.queries import run_query

    with pytest.raises(CommandError, match="bbox") as refused:
        run_query(base(), "uavs", {"bbox": box})
    assert refused.value.field == "bbox"
