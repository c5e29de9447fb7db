"""Telemetry: input formats and row-by-row reasons, the log entry, and last-writer-wins by the
UAV's own (time, seq) under reordered, duplicated and stale reports."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane import bugs
from controlplane.raft.messages import Entry
from controlplane.state.fleet import FleetState
from controlplane.state.telemetry import (
    REPORT_SCHEMA,
    ReportError,
    check_segment,
    decode_entry,
    encode_entry,
    encode_segment,
    join_segments,
    normalize,
    report_time_histogram,
    spaced_ids,
)


def command(state: FleetState, index: int, cmd: dict) -> dict:
    return state.apply(Entry(1, index, json.dumps(cmd).encode()))


def fleet(n_uavs: int = 3) -> FleetState:
    s = FleetState()
    command(s, 1, {"type": "register_station", "station": "alpha"})
    for i in range(n_uavs):
        command(s, 2 + i, {"type": "register_uav", "uav": f"u{i}", "home_station": "alpha", "battery": 50})
    return s


def report(uav: str, t: float, seq: int, **values: float) -> dict:
    return {"uav": uav, "time": t, "seq": seq, **values}


def send(state: FleetState, index: int, reports: list[dict], *, auto_register: bool = False) -> dict:
    table, rejected = normalize(reports, station="alpha")
    assert rejected == []
    return state.apply(Entry(1, index, encode_entry(table, auto_register=auto_register)))


def test_every_input_format_gives_the_same_table():
    rows = [report("u0", 10.0, 1, lat=47.1, lon=8.2, battery=80.0), report("u1", 11.0, 2, alt=30.0)]
    from_dicts, _ = normalize(rows)
    from_frame, _ = normalize(pd.DataFrame(rows))
    from_table, _ = normalize(pa.Table.from_pandas(pd.DataFrame(rows), preserve_index=False))
    from_batch, _ = normalize(pa.RecordBatch.from_pandas(pd.DataFrame(rows), preserve_index=False))
    assert from_dicts.equals(from_frame) and from_dicts.equals(from_table) and from_dicts.equals(from_batch)
    assert from_dicts.column("alt").to_pylist() == [None, 30.0]  # absent: keeps the UAV's value


def test_bad_rows_are_rejected_with_reasons_and_good_rows_kept():
    rows = [
        report("u0", 10.0, 1, lat=47.0),
        report("u1", 10.0, 1, lat=95.0),
        {"uav": "u2", "time": "noon", "seq": 1},
        report("has space", 10.0, 1),
        {"uav": "u3", "seq": 4},
        report("u4", math.inf, 1),
        report("u5", 10.0, -3),
        "not a dict",
        {**report("u6", 1.0, 1), "colour": "red"},
        report("u7", 10.0, 1, battery=101),
        report("u8", 10.0, 2**70),  # does not fit the column
    ]
    table, rejected = normalize(rows)
    assert table.column("uav").to_pylist() == ["u0"]
    assert [(r.row, r.field) for r in rejected] == [
        (1, "lat"),
        (2, "time"),
        (3, "uav"),
        (4, "time"),
        (5, "time"),
        (6, "seq"),
        (7, "report"),
        (8, "colour"),
        (9, "battery"),
        (10, "seq"),
    ]
    assert "within [-90.0, 90.0]" in rejected[0].reason
    # A frame with a whole column of the wrong type, or a missing column, is refused as a whole.
    with pytest.raises(ReportError, match="'lat'"):
        normalize(pd.DataFrame({"uav": ["a"], "time": [1.0], "seq": [1], "lat": ["north"]}))
    with pytest.raises(ReportError, match=r"\['seq'\]"):
        normalize(pd.DataFrame({"uav": ["a"], "time": [1.0]}))
    with pytest.raises(ReportError, match="got str"):
        normalize("u0,1,2")


def test_an_id_is_limited_to_128_characters_not_bytes():
    """Ids are checked by their byte lengths first (no string read) and by characters only
    when some byte length is out of bounds: both ways must give the same verdicts."""
    ok = ["x" * 128, "é" * 100, "u" + "€" * 127]  # 128, 200 and 382 bytes
    bad = ["", "x" * 129, "é" * 129]
    for ids in (ok, ok + bad, ["u0", "u1"]):
        table, rejected = normalize([report(u, 1.0, 1) for u in ids])
        assert table.column("uav").to_pylist() == [u for u in ids if u in ok or u in ("u0", "u1")]
        assert [(r.row, r.field) for r in rejected] == [(i, "uav") for i, u in enumerate(ids) if u in bad]


def test_timestamps_become_seconds_and_station_is_filled():
    frame = pd.DataFrame({"uav": ["u0"], "time": pd.to_datetime(["2026-01-01T00:00:01Z"]), "seq": [1]})
    table, _ = normalize(frame, station="bravo")
    assert table.column("time").to_pylist() == [pd.Timestamp("2026-01-01T00:00:01Z").timestamp()]
    assert table.column("station").to_pylist() == ["bravo"]


def test_the_newest_report_wins_whatever_the_arrival_order():
    s = fleet()
    answer = send(
        s,
        10,
        [
            report("u0", 20.0, 5, lat=2.0),
            report("u0", 30.0, 1, lat=3.0),  # newest by time, even with a lower seq
            report("u0", 10.0, 9, lat=1.0),
            report("u1", 5.0, 1, lat=7.0),
            report("u1", 5.0, 2, lat=8.0),  # same time: seq decides
        ],
    )
    assert answer["ok"] and answer["accepted"] == 5 and answer["written"] == 2
    assert s.uav("u0")["lat"] == 3.0 and s.uav("u1")["lat"] == 8.0
    # Older than what is stored: stale, dropped. The same (time, seq) again: duplicate.
    again = send(s, 11, [report("u0", 25.0, 1, lat=9.0), report("u0", 30.0, 1, lat=3.0)])
    assert (again["stale"], again["duplicate"], again["written"]) == (1, 1, 0)
    assert s.uav("u0")["lat"] == 3.0 and s.uav("u0")["report_time"] == 30.0


def test_duplicates_inside_a_batch_count_once():
    s = fleet()
    answer = send(s, 10, [report("u0", 1.0, 1, lat=1.0)] * 3)
    assert (answer["accepted"], answer["duplicate"], answer["written"]) == (1, 2, 1)


def test_absent_values_keep_the_previous_ones():
    s = fleet()
    send(s, 10, [report("u0", 1.0, 1, lat=1.0, battery=70.0)])
    send(s, 11, [report("u0", 2.0, 2, lon=5.0)])
    u = s.uav("u0")
    assert (u["lat"], u["lon"], u["battery"], u["report_seq"]) == (1.0, 5.0, 70.0, 2)


def test_unknown_uavs_are_rejected_or_registered_at_their_station():
    s = fleet()
    answer = send(s, 10, [report("ghost", 1.0, 1), report("u0", 1.0, 1)])
    assert (answer["rejected"], answer["accepted"]) == (1, 1) and "ghost" not in s.uavs
    answer = send(s, 11, [report("ghost", 1.0, 1, lat=4.0)], auto_register=True)
    assert answer["registered"] == 1 and s.uav("ghost")["home_station"] == "alpha"
    assert s.uav("ghost")["lat"] == 4.0
    table, _ = normalize([report("lost", 1.0, 1)], station="nowhere")  # station not registered
    answer = s.apply(Entry(1, 12, encode_entry(table, auto_register=True)))
    assert answer["rejected"] == 1 and "lost" not in s.uavs


def test_a_forged_entry_is_rechecked_on_apply():
    s = fleet()
    before = s.digest()
    # What normalize() would refuse, written straight into an entry (a buggy or hostile proposer).
    given = {"uav": ["u0", "u1"], "time": [1.0, float("nan")], "seq": [1, 1], "lat": [500.0, 1.0]}
    full = pa.table({f.name: given.get(f.name, [None, None]) for f in REPORT_SCHEMA}, schema=REPORT_SCHEMA)
    answer = s.apply(Entry(1, 10, encode_entry(full, auto_register=False)))
    assert answer["rejected"] == 2 and s.digest() == before
    bad = s.apply(Entry(1, 11, b"TLM1\x00garbage"))
    assert not bad["ok"] and bad["field"] == "telemetry" and s.digest() == before


def _raw_segment(table: pa.Table) -> bytes:
    """A segment written the way a buggy station would: no dictionary encoding, any types."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def test_a_poison_segment_is_refused_before_the_log_and_never_raises_in_apply():
    """Defect 7: a segment whose uav column was not dictionary-encoded raised in apply, on
    every replica at the same index, and again on every replay."""
    table, _ = normalize([report("u0", 5.0, 1, lat=10.0)], station="alpha")
    plain = _raw_segment(table)  # the uav column as plain strings
    check_segment(plain)  # fine once normalised: the leader lets it through
    s = fleet()
    answer = s.apply(Entry(1, 10, join_segments([plain], auto_register=False)))
    assert answer["ok"] and answer["accepted"] == 1 and s.uav("u0")["lat"] == 10.0
    wrong = table.set_column(table.schema.get_field_index("time"), "time", pa.array(["5.0"]))
    with pytest.raises(ValueError, match="'time' is string, expected double"):
        check_segment(_raw_segment(wrong))  # refused at the leader: it never reaches the log
    forged = s.apply(Entry(1, 11, join_segments([_raw_segment(wrong)], auto_register=False)))
    assert forged["ok"] is False and "time" in forged["error"]  # and if it did: a recorded refusal
    with bugs.switched_on("telemetry_poison"), pytest.raises(AttributeError):
        fleet().apply(Entry(1, 10, join_segments([plain], auto_register=False)))


def test_a_dictionary_naming_a_uav_twice_still_finds_it_through_either_code():
    """Stations write each id once in a segment's dictionary; a forged segment may repeat
    one. Every code naming a known UAV must find its row, as when each id was looked up."""
    table, _ = normalize([report("u0", 5.0, 1, lat=10.0), report("u0", 6.0, 2, lat=20.0),
                          report("u9", 6.0, 2), report("u1", 7.0, 1, lat=30.0)], station="alpha")  # fmt: skip
    codes = pa.array([0, 1, 2, 3], pa.int32())
    uav = pa.DictionaryArray.from_arrays(codes, pa.array(["u0", "u0", "u9", "u1"]))
    forged = table.set_column(table.schema.get_field_index("uav"), "uav", uav)
    s = fleet()
    answer = s.apply(Entry(1, 10, join_segments([_raw_segment(forged)], auto_register=False)))
    assert (answer["accepted"], answer["rejected"]) == (3, 1)  # u9 is not known
    assert s.uav("u0")["lat"] == 20.0 and s.uav("u1")["lat"] == 30.0


def test_a_station_reporting_the_same_uavs_sends_the_same_dictionary():
    """Replicas keep the rows of the dictionaries they saw last (IdRows): a station's segment
    names its UAVs in sorted order, so the same UAVs reported in another order still repeat."""
    first, _ = normalize([report("u2", 1.0, 1), report("u0", 1.0, 1), report("u1", 1.0, 1)], station="alpha")
    again, _ = normalize([report("u1", 2.0, 2), report("u2", 2.0, 2), report("u0", 2.0, 2), report("u1", 2.5, 3)],
                         station="alpha")  # fmt: skip
    dictionaries = [decode_entry(encode_entry(t, auto_register=False))[0][0].column("uav").chunk(0) for t in
                    (first, again)]  # fmt: skip
    assert dictionaries[0].dictionary.to_pylist() == ["u0", "u1", "u2"]
    assert dictionaries[0].dictionary.equals(dictionaries[1].dictionary)
    assert dictionaries[1].to_pylist() == ["u1", "u2", "u0", "u1"]  # each report still names its own UAV


def test_a_repeated_dictionary_still_finds_uavs_registered_deleted_or_restored_since():
    """The rows kept for a dictionary are dropped whenever a UAV comes or goes: the same
    segment must then find the new UAV, refuse the deleted one, and find each UAV's row in a
    state restored from a snapshot (where rows are numbered afresh)."""
    s = fleet(2)  # u0, u1; u2 unknown
    ids = ["u0", "u1", "u2"]

    def answer(index: int, t: float) -> dict:
        return send(s, index, [report(u, t, 1, lat=t) for u in ids])

    assert (answer(10, 1.0)["accepted"], s.uav("u0")["lat"]) == (2, 1.0)
    command(s, 11, {"type": "register_uav", "uav": "u2", "home_station": "alpha"})
    assert (answer(12, 2.0)["accepted"], s.uav("u2")["lat"]) == (3, 2.0)
    command(s, 13, {"type": "delete_uav", "uav": "u0"})
    assert answer(14, 3.0)["rejected"] == 1 and "u0" not in s.uavs
    snapshot = s.snapshot()  # u1 and u2, numbered 0 and 1 when restored
    command(s, 15, {"type": "register_uav", "uav": "u0", "home_station": "alpha"})  # u0 takes row 0 again
    assert answer(16, 4.0)["accepted"] == 3
    s.restore(snapshot)
    assert (answer(17, 5.0)["rejected"], s.uav("u1")["lat"], s.uav("u2")["lat"]) == (1, 5.0, 5.0)


def test_apply_never_raises_even_on_a_bug_inside_a_command():
    s = fleet()
    s._cmd_create_group = lambda cmd, index: 1 / 0  # a bug in one handler
    answer = command(s, 20, {"type": "create_group", "group": "g"})
    assert answer["ok"] is False and answer["internal"] and "ZeroDivisionError" in answer["error"]
    assert command(s, 21, {"type": "checkpoint"})["ok"]  # and the replica goes on


def test_entry_round_trip_and_compression():
    rows = [report(f"u{i % 100}", float(i), i, lat=47.0 + i / 1e5, lon=8.0) for i in range(10_000)]
    table, _ = normalize(rows, station="alpha")
    data = encode_entry(table, auto_register=True)
    [back], auto = decode_entry(data)
    assert auto and back.num_rows == 10_000
    assert back.column("uav").to_pylist() == table.column("uav").to_pylist()
    assert len(data) < table.nbytes


def test_an_entry_joins_segments_from_several_stations():
    s = fleet()
    alpha, _ = normalize([report("u0", 5.0, 1, lat=5.0), report("u1", 1.0, 1)], station="alpha")
    bravo, _ = normalize([report("u0", 4.0, 9, lat=4.0), report("u1", 1.0, 1)], station="bravo")
    entry = join_segments([encode_segment(alpha), encode_segment(bravo)], auto_register=False)
    answer = s.apply(Entry(1, 10, entry))
    assert (answer["accepted"], answer["stale"], answer["duplicate"]) == (2, 1, 1)
    assert s.uav("u0")["lat"] == 5.0
    bad = s.apply(Entry(1, 11, entry[:-10]))
    assert not bad["ok"] and "truncated" in bad["error"]


def test_telemetry_frees_a_uav_for_the_scheduler():
    s = fleet(1)
    command(
        s,
        10,
        {"type": "create_mission", "mission": "m", "min_battery": 80, "waypoints": [{"lat": 1, "lon": 1, "alt": 10}]},
    )
    assert s.missions["m"].status.value == "pending"  # u0 has 50%
    send(s, 11, [report("u0", 1.0, 1, battery=95.0)])
    assert s.missions["m"].uav == "u0"


def test_snapshot_keeps_reports_and_counters():
    s = fleet()
    send(s, 10, [report("u0", 3.0, 1, lat=5.0), report("u1", 2.0, 1)])
    copy = FleetState()
    copy.restore(s.snapshot())
    assert copy.digests() == s.digests() and copy.telemetry == s.telemetry
    stale = send(copy, 11, [report("u0", 2.0, 7)])
    assert stale["stale"] == 1  # the last report's (time, seq) survived the snapshot


reports_strategy = st.lists(
    st.tuples(st.sampled_from(["u0", "u1", "u2"]), st.integers(0, 5), st.integers(0, 3), st.integers(-80, 80)),
    min_size=1,
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(reports_strategy, st.integers(1, 6), st.randoms(use_true_random=False))
def test_any_split_and_order_gives_sequential_last_writer_wins(raw, batches, rnd: random.Random):
    """Applying reports in batches of any size and order ends where applying the newest
    per UAV does: the result does not depend on how telemetry was cut or reordered."""
    reports = [report(u, float(t), q, lat=float(lat)) for u, t, q, lat in raw]
    expected: dict[str, tuple[float, int, float]] = {}
    for r in reports:  # the first of equal keys counts
        key = (r["time"], r["seq"])
        if r["uav"] not in expected or key > expected[r["uav"]][:2]:
            expected[r["uav"]] = (*key, r["lat"])
    shuffled = reports[:]
    rnd.shuffle(shuffled)
    s, index = fleet(), 100
    chunk = max(1, len(shuffled) // batches)
    accepted = 0
    for start in range(0, len(shuffled), chunk):
        index += 1
        accepted += send(s, index, shuffled[start : start + chunk])["accepted"]
    for uav, (t, q, _) in expected.items():
        got = s.uav(uav)
        assert (got["report_time"], got["report_seq"]) == (t, q)
    distinct = {(r["uav"], r["time"], r["seq"]) for r in reports}
    assert accepted <= len(distinct)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(0, 4e9, allow_nan=False), min_size=1, max_size=300), st.data())
def test_the_report_time_histogram_puts_each_applied_report_in_its_bucket(times, data):
    """What a watcher reads to tell how old reports were when applied (bench.telemetry's
    latency): every applied report counted once, in the bucket holding its time."""
    applied = np.array(data.draw(st.lists(st.booleans(), min_size=len(times), max_size=len(times))))
    table = pa.table({"time": pa.array(times, pa.float64())})
    buckets = report_time_histogram(table, applied, buckets=16)
    chosen = np.asarray(times)[applied]
    assert sum(n for _, n in buckets) == len(chosen)
    if not len(chosen):
        assert buckets == []
        return
    starts = [start for start, _ in buckets]
    width = max(0.01, (chosen.max() - chosen.min()) / 16)
    assert starts == sorted(starts) and len(buckets) <= 17
    for start, n in buckets:
        inside = np.count_nonzero((chosen >= start - 1e-6 * width) & (chosen < start + width * (1 + 1e-6)))
        assert inside >= n > 0


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.text(alphabet=st.sampled_from("ab9-_\t\n\x0b\x0c\r \u00a0\u2003é"), max_size=6) | st.none(), max_size=8
        ),
        max_size=4,
    ),
    st.integers(0, 3),
)
def test_whitespace_in_ids_is_found_exactly_as_the_regex_finds_it(chunks, cut):
    import pyarrow.compute as pc

    ids = pa.chunked_array([pa.array(chunk, pa.string()) for chunk in chunks], pa.string())
    ids = ids.slice(min(cut, len(ids)))  # chunks whose buffers hold bytes outside the slice
    expected = np.asarray(pc.fill_null(pc.match_substring_regex(ids, r"\s"), False).to_numpy(), dtype=bool)
    assert spaced_ids(ids).tolist() == expected.tolist()
