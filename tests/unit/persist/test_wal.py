import os
import signal
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane import bugs
from controlplane.persist import CorruptionError, FileLogStore, StorageError
from controlplane.persist.wal import ENTRY, HEADER_BYTES
from controlplane.raft.messages import Entry, EntryKind, HardState

ROOT = Path(__file__).resolve().parents[3]


def entries(first, n, term=1, size=10):
    return [Entry(term, i, bytes([i % 251]) * size) for i in range(first, first + n)]


def test_entries_survive_reopen_across_segments(tmp_path):
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.append(entries(1, 200, size=30))
    store.sync()
    store.close()
    assert len(list(tmp_path.glob("wal-*.log"))) > 3
    again = FileLogStore(tmp_path, segment_bytes=1024)
    assert again.entries() == entries(1, 200, size=30)
    assert again.repaired_tail_bytes == 0


def test_append_truncates_conflicting_suffix_across_segments(tmp_path):
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.append(entries(1, 100, size=30))
    store.append(entries(40, 5, term=2, size=3))
    store.sync()
    want = entries(1, 39, size=30) + entries(40, 5, term=2, size=3)
    assert store.entries() == want
    store.close()
    assert FileLogStore(tmp_path, segment_bytes=1024).entries() == want


def test_gaps_are_refused(tmp_path):
    store = FileLogStore(tmp_path)
    store.append(entries(1, 3))
    with pytest.raises(StorageError, match="gap"):
        store.append(entries(5, 1))


def test_compact_deletes_only_whole_covered_segments(tmp_path):
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.append(entries(1, 200, size=30))
    store.sync()
    before = len(list(tmp_path.glob("wal-*.log")))
    store.compact(100)
    after = sorted(tmp_path.glob("wal-*.log"))
    assert len(after) < before
    assert store.entries()[0].index == 101  # the view keeps only what the snapshot does not cover
    store.close()
    again = FileLogStore(tmp_path, segment_bytes=1024).entries()
    assert again[0].index <= 101 and [e.index for e in again] == list(range(again[0].index, 201))


def test_reset_then_append_after_a_snapshot_point(tmp_path):
    store = FileLogStore(tmp_path)
    store.append(entries(1, 10))
    store.reset(500)
    store.append(entries(500, 3, term=4))
    store.sync()
    store.close()
    assert FileLogStore(tmp_path).entries() == entries(500, 3, term=4)


def record_offsets(tmp_path, n, size=40):
    """A one-segment log of n entries, and the byte offset of each entry record."""
    store = FileLogStore(tmp_path)
    store.append(entries(1, n, size=size))
    store.sync()
    store.close()
    segment = next(tmp_path.glob("wal-*.log"))
    data, pos, offsets = segment.read_bytes(), 0, []
    while pos < len(data):
        length, _, kind = struct.unpack_from("<IIB3x", data, pos)
        if kind == ENTRY:
            offsets.append(pos)
        pos += HEADER_BYTES + length
    return segment, offsets


@pytest.mark.parametrize("cut", [1, 5, 8, 15, 16, 20, -1])
def test_torn_last_record_is_truncated_on_recovery(tmp_path, cut):
    seg, offsets = record_offsets(tmp_path, 10)
    size = seg.stat().st_size
    with open(seg, "r+b") as f:
        f.truncate(offsets[-1] + cut if cut > 0 else size - 1)
    again = FileLogStore(tmp_path)
    assert again.entries() == entries(1, 9, size=40)
    assert again.repaired_tail_bytes > 0
    again.append(entries(10, 2, size=40))
    again.sync()
    again.close()
    assert FileLogStore(tmp_path).entries() == entries(1, 11, size=40)


def test_a_garbled_final_record_counts_as_torn(tmp_path):
    seg, _ = record_offsets(tmp_path, 5)
    data = bytearray(seg.read_bytes())
    data[-3] ^= 0xFF
    seg.write_bytes(bytes(data))
    assert FileLogStore(tmp_path).entries() == entries(1, 4, size=40)


@pytest.mark.parametrize("kept", [0, 3, 16, 30])
def test_a_final_record_cut_short_then_zero_filled_counts_as_torn(tmp_path, kept):
    seg, offsets = record_offsets(tmp_path, 5)
    data = seg.read_bytes()
    end = len(data)
    torn = data[: offsets[-1] + kept] + b"\0" * (end - offsets[-1] - kept + 100)
    seg.write_bytes(torn)
    assert FileLogStore(tmp_path).entries() == entries(1, 4, size=40)


def test_zero_filled_tail_counts_as_torn(tmp_path):
    store = FileLogStore(tmp_path)
    store.append(entries(1, 5))
    store.sync()
    store.close()
    seg = next(tmp_path.glob("wal-*.log"))
    with open(seg, "ab") as f:
        f.write(b"\0" * 4096)
    assert FileLogStore(tmp_path).entries() == entries(1, 5)


def test_corruption_in_the_middle_is_refused_with_file_and_offset(tmp_path):
    seg, offsets = record_offsets(tmp_path, 10)
    data = bytearray(seg.read_bytes())
    data[offsets[3] + 20] ^= 0x01
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as info:
        FileLogStore(tmp_path)
    assert info.value.path == seg and info.value.offset == offsets[3]
    assert str(seg) in str(info.value) and f"offset {offsets[3]}" in str(info.value)
    assert seg.read_bytes() == bytes(data)  # refused, not "repaired"


@pytest.mark.parametrize("flip", [1, 2, 3])
def test_a_corrupt_length_mid_segment_is_refused_not_taken_for_a_torn_tail(tmp_path, flip):
    """Defect 6: the record length sat outside the checksum, so a damaged length made the
    acknowledged records after it look like a torn tail, and recovery dropped them."""
    seg, offsets = record_offsets(tmp_path, 10)
    data = bytearray(seg.read_bytes())
    data[offsets[4] + flip] ^= 0x40  # the length of record 5 of 10 now runs past the end
    seg.write_bytes(bytes(data))
    with pytest.raises(CorruptionError) as info:
        FileLogStore(tmp_path)
    assert info.value.offset == offsets[4]
    with bugs.switched_on("wal_length_unchecked"):  # the old format's rule loses 5..10
        assert len(FileLogStore(tmp_path).entries()) < 10


def test_the_first_stored_entry_can_be_truncated(tmp_path):
    """Defect 2: after a snapshot install the WAL starts at snapshot+1; a conflicting append
    there must replace it, not kill the Raft loop."""
    store = FileLogStore(tmp_path)
    store.reset(101)
    store.append(entries(101, 5, term=3))
    store.append(entries(101, 2, term=4))
    store.sync()
    assert store.entries() == entries(101, 2, term=4)
    store.close()
    assert FileLogStore(tmp_path).entries() == entries(101, 2, term=4)
    with bugs.switched_on("wal_first_truncate"), pytest.raises(StorageError, match="first stored"):
        FileLogStore(tmp_path).append(entries(101, 1, term=5))


def test_hard_states_ride_in_the_log_and_the_latest_wins(tmp_path):
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.write(entries(1, 3), HardState(1, 0, 3))
    store.write(entries(4, 100, size=30), HardState(2, 1, 50))
    store.write((), HardState(2, 1, 90))
    store.sync()
    store.compact(80)  # old segments go; each segment starts with the hard state
    store.close()
    again = FileLogStore(tmp_path, segment_bytes=1024)
    assert again.hard_state == HardState(2, 1, 90)
    assert again.entries()[-1].index == 103


def test_truncation_keeps_the_latest_hard_state(tmp_path):
    store = FileLogStore(tmp_path)
    store.write(entries(1, 10), HardState(2, 1, 4))
    store.write(entries(6, 1, term=3), None)  # cuts the hard-state record that followed 10
    store.sync()
    store.close()
    assert FileLogStore(tmp_path).hard_state == HardState(2, 1, 4)


def test_corruption_in_an_earlier_segment_is_refused(tmp_path):
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.append(entries(1, 100, size=30))
    store.sync()
    store.close()
    first = sorted(tmp_path.glob("wal-*.log"))[0]
    data = bytearray(first.read_bytes())
    data[-2] ^= 0x01  # the last record of a non-final segment
    first.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=first.name):
        FileLogStore(tmp_path, segment_bytes=1024)


def test_conf_change_entries_round_trip(tmp_path):
    store = FileLogStore(tmp_path)
    e = Entry(3, 1, b"\x00" * 9, EntryKind.CONF_CHANGE)
    store.append([e])
    store.sync()
    store.close()
    assert FileLogStore(tmp_path).entries() == [e]


def test_process_killed_mid_write_keeps_every_synced_entry(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for round_ in range(3):  # each round resumes the same log, then is killed again
        proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("wal_writer.py")), str(tmp_path)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert proc.stdout is not None
        acknowledged = 0
        for line in proc.stdout:
            acknowledged = int(line)
            if acknowledged >= 2000 * (round_ + 1):
                break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        recovered = FileLogStore(tmp_path, segment_bytes=64 * 1024)
        got = recovered.entries()
        assert got[-1].index >= acknowledged
        assert [e.index for e in got] == list(range(1, len(got) + 1))
        assert all(e.data == b"payload-%d" % e.index * 20 for e in got)
        recovered.close()


def test_the_log_goes_on_after_compacting_all_of_it(tmp_path):
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.append(entries(1, 50, size=30))
    store.compact(50)  # a snapshot covers everything
    assert store.entries() == [] and store.next_index() == 51
    store.append(entries(51, 2, size=30))
    store.sync()
    store.close()
    assert [e.index for e in FileLogStore(tmp_path, segment_bytes=1024).entries()][-2:] == [51, 52]


def test_a_replacing_write_across_a_segment_boundary_wins_on_replay(tmp_path):
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.append(entries(1, 40, term=1, size=30))
    store.write(entries(25, 30, term=2, size=30), HardState(2, 1, 24))  # rolls over mid-write
    store.sync()
    store.close()
    again = FileLogStore(tmp_path, segment_bytes=1024)
    assert again.entries() == entries(1, 24, term=1, size=30) + entries(25, 30, term=2, size=30)
    assert again.hard_state == HardState(2, 1, 24)


def test_entries_below_skip_below_are_checked_but_not_kept(tmp_path):
    """What a snapshot covers is not read back; what follows it is, replacements included,
    and the log goes on from where it ended."""
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.append(entries(1, 100, size=30))
    store.write(entries(60, 20, term=2, size=30), HardState(2, 1, 59))  # replaces 60..100
    store.sync()
    store.close()
    again = FileLogStore(tmp_path, segment_bytes=1024, skip_below=50)
    assert again.entries() == entries(50, 10, size=30) + entries(60, 20, term=2, size=30)
    assert again.hard_state == HardState(2, 1, 59)
    again.append(entries(80, 1, term=2, size=30))
    again.sync()
    again.close()
    assert FileLogStore(tmp_path, segment_bytes=1024, skip_below=79).entries() == entries(79, 2, term=2, size=30)
    everything = FileLogStore(tmp_path, segment_bytes=1024, skip_below=1000)
    assert everything.entries() == [] and everything.next_index() == 81


def test_a_gap_below_skip_below_is_still_refused(tmp_path):
    store = FileLogStore(tmp_path, segment_bytes=1024)
    store.append(entries(1, 20, size=30))
    store.sync()
    store.close()
    segment = sorted(tmp_path.glob("wal-*.log"))[0]
    data = bytearray(segment.read_bytes())
    # Cut the third record out (whole, checksums intact; the first is the segment's hard
    # state): entry 2 is missing on replay.
    pos, starts = 0, []
    while pos < len(data):
        length = struct.unpack_from("<I", data, pos)[0]
        starts.append(pos)
        pos += HEADER_BYTES + length
    segment.write_bytes(data[: starts[2]] + data[starts[3] :])
    with pytest.raises(CorruptionError, match="entry index 3, expected at most 2"):
        FileLogStore(tmp_path, segment_bytes=1024, skip_below=10)
