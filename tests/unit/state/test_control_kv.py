"""The control records in the replicated state: compare-and-set by version, a refused write
changes nothing, and the records travel in snapshots and digests."""

from __future__ import annotations

import pytest

from controlplane.state.fleet import FleetState, validate
from controlplane.state.model import CommandError
from controlplane.state.queries import run_query
from controlplane.state.snapshot_codec import decode_tables
from tests.unit.state.test_fleet import run


def cas(key: str, value: str | None, if_version: int) -> dict:
    return {"type": "control_cas", "key": key, "value": value, "if_version": if_version}


def test_a_key_is_created_once_then_written_only_at_its_version():
    s = FleetState()
    [created] = run(s, cas("placement/g", '{"1": "a"}', 0))
    assert created["ok"] and created["version"] == 1
    assert run_query(s, "control_kv", {"key": "placement/g"}) == {
        "key": "placement/g",
        "value": '{"1": "a"}',
        "version": 1,
    }
    again, stale, moved = run(
        s, cas("placement/g", "other", 0), cas("placement/g", "other", 7), cas("placement/g", "b", 1), start=2
    )
    assert not again["ok"] and again["conflict"] and "at version 1, not 0" in again["error"]
    assert not stale["ok"] and stale["conflict"]
    assert moved["ok"] and moved["version"] == 4  # the log index that wrote it
    assert run_query(s, "control_kv", {"key": "placement/g"})["value"] == "b"
    [deleted] = run(s, cas("placement/g", None, 4), start=5)
    assert deleted["ok"] and run_query(s, "control_kv", {"key": "placement/g"}) is None


def test_refused_writes_change_nothing():
    s = FleetState()
    run(s, cas("k", "v", 0))
    before = s.digests()
    run(s, cas("k", "w", 0), cas("absent", None, 3), start=2)
    assert s.digests() == before and s.rejections == 2


@pytest.mark.parametrize(
    ("command", "field"),
    [
        (cas("", "v", 0), "key"),
        (cas("has space", "v", 0), "key"),
        (cas("k", 5, 0), "value"),  # type: ignore[arg-type]
        (cas("k", "v", -1), "if_version"),
        (cas("k", "v", True), "if_version"),
        ({"type": "control_cas", "key": "k", "value": "v"}, "if_version"),
    ],
)
def test_bad_control_commands_name_the_field(command, field):
    with pytest.raises(CommandError) as err:
        validate(command)
    assert err.value.field == field
    [answer] = run(FleetState(), command)  # refused on apply too, the same on every replica
    assert not answer["ok"] and answer["field"] == field


def test_control_records_are_in_snapshots_and_digests():
    s = FleetState()
    run(s, cas("placement/a", "x", 0), cas("placement/b", "y", 0))
    again = FleetState()
    again.restore(s.snapshot())
    assert run_query(again, "control_kv", {"key": "placement/b"}) == {"key": "placement/b", "value": "y", "version": 2}
    assert again.digest() == s.digest()
    other = FleetState()
    run(other, cas("placement/a", "x", 0), cas("placement/b", "z", 0))
    assert other.digests()["control"] != s.digests()["control"]


def test_a_snapshot_without_control_records_still_restores():
    from controlplane.state.snapshot_codec import MAGIC

    s = FleetState()
    run(s, {"type": "register_station", "station": "alpha"})
    data = s.snapshot()
    tables = decode_tables(data)
    assert "control" in tables
    # Rebuild the container without the control table, as snapshots before it were written.
    import struct

    out, pos = [MAGIC, struct.pack("<I", len(tables) - 1)], 8
    for _ in range(len(tables)):
        (n,) = struct.unpack_from("<H", data, pos)
        name = data[pos + 2 : pos + 2 + n].decode()
        (size,) = struct.unpack_from("<Q", data, pos + 2 + n)
        end = pos + 10 + n + size
        if name != "control":
            out.append(data[pos:end])
        pos = end
    old = FleetState()
    old.restore(b"".join(out))
    assert old.stations == {"alpha"} and old.control.rows() == []
