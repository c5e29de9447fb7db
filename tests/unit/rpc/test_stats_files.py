"""RPC statistics kept by age and size, merged as they age, read back by time window."""

from __future__ import annotations

import os

import pandas as pd
import pytest

from analysis.rpc_stats import load_rpc_stats
from controlplane.rpc.stats import ArrowStatsWriter, AttemptRecord
from controlplane.rpc.stats_files import StatsRetention, parse_time, read_window, stats_files

T0 = 1_790_000_000.0  # rows are stamped from here on, one a second
RETAIN = StatsRetention(max_age=86_400, max_bytes=1 << 30, compact_after=600, compact_bytes=16 << 20)


def write(tmp_path, flushes: int, rows: int = 10, node: str = "n1", retention: StatsRetention = RETAIN):
    writer = ArrowStatsWriter(tmp_path, node=node, flush_rows=rows, retention=retention)
    for i in range(flushes * rows):
        writer(AttemptRecord(T0 + i, "1", "2", "heartbeat", 1, "ok", None, 0.5, 40, 0, 0, 1))
    writer.close()
    return writer


def age(tmp_path, seconds_by_file: dict[int, float], now: float) -> None:
    """Set each flushed file's write time to `now - seconds` (by its sequence number)."""
    for f in stats_files(tmp_path, "n1"):
        if f.first in seconds_by_file:
            moment = now - seconds_by_file[f.first]
            os.utime(f.path, (moment, moment))


def test_files_older_than_max_age_go_and_the_rest_stay(tmp_path):
    writer = write(tmp_path, 5)
    now = T0 + 200_000
    age(tmp_path, {0: 90_000, 1: 90_000, 2: 60, 3: 30, 4: 1}, now)
    done = writer.retain(now)
    assert done["expired"] == 2
    assert [f.first for f in stats_files(tmp_path, "n1")] == [2, 3, 4]


def test_the_oldest_go_first_past_max_bytes_but_never_the_newest(tmp_path):
    writer = write(tmp_path, 5, retention=StatsRetention(max_bytes=1, compact_after=600))
    done = writer.retain(T0 + 10)
    assert done["over_size"] == 4 and [f.first for f in stats_files(tmp_path, "n1")] == [4]


def test_small_aged_files_are_merged_without_losing_or_doubling_a_row(tmp_path):
    writer = write(tmp_path, 6)
    now = T0 + 10_000
    age(tmp_path, {0: 5000, 1: 4000, 2: 3000, 3: 2000, 4: 100, 5: 1}, now)  # 0-3 aged
    done = writer.retain(now)
    files = stats_files(tmp_path, "n1")
    assert done["merged"] == 4
    assert [(f.first, f.last) for f in files] == [(0, 3), (4, 4), (5, 5)]
    assert files[0].written == pytest.approx(now - 2000)  # the age of its newest rows
    df = load_rpc_stats(tmp_path)
    assert len(df) == 60 and df["time"].is_unique
    assert ArrowStatsWriter(tmp_path, node="n1").flush() is None  # nothing buffered
    assert ArrowStatsWriter(tmp_path, node="n1")._seq == 6  # a restart continues after the merge


def test_a_crash_between_a_merge_and_removing_its_inputs_leaves_no_row_twice(tmp_path):
    writer = write(tmp_path, 4)
    now = T0 + 10_000
    age(tmp_path, {0: 5000, 1: 4000, 2: 3000, 3: 2000}, now)
    inputs = {f.path: f.path.read_bytes() for f in stats_files(tmp_path, "n1")}
    writer.retain(now)
    for path, data in list(inputs.items())[1:3]:  # as if the process died before removing them
        path.write_bytes(data)
        os.utime(path, (now - 3000, now - 3000))
    done = writer.retain(now)
    assert done["covered"] == 2
    assert len(load_rpc_stats(tmp_path)) == 40


def test_a_time_window_reads_only_its_rows(tmp_path):
    write(tmp_path, 3)
    files = [f.path for f in stats_files(tmp_path, "n1")]
    table = read_window(files, T0 + 5, T0 + 15)
    assert table is not None and table.num_rows == 10
    assert read_window(files, T0 + 1000, None) is None
    df = load_rpc_stats(tmp_path, since=pd.Timestamp(T0 + 25, unit="s", tz="UTC"))
    assert len(df) == 5
    assert len(load_rpc_stats(tmp_path, until=T0 + 3)) == 3


def test_times_are_iso_or_a_duration_back_and_anything_else_is_named():
    assert parse_time("2h", now=10_000.0) == 10_000.0 - 7200
    assert parse_time("90m", now=10_000.0) == 10_000.0 - 5400
    assert parse_time("2026-12-01T22:00Z") == parse_time("2026-12-01T22:00") == parse_time("2026-12-01T23:00+01:00")
    with pytest.raises(ValueError, match="not a time: 'yesterday'"):
        parse_time("yesterday")


def test_retention_settings_are_checked():
    with pytest.raises(ValueError, match="positive"):
        StatsRetention(max_age=0)
    with pytest.raises(ValueError, match="shorter"):
        StatsRetention(max_age=60, compact_after=600)
