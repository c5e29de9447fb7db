"""Defects we fixed (or a design must not have), kept switchable so the simulator can prove
it finds them.

FoundationDB's BUGGIFY turns on known-bad behaviour to show its checks can fail; this is
the same idea aimed at our own history: each switch below re-enables one defect in the
production code path, exactly as it was (or, for a design's hazard, as the obvious shortcut
would write it). Off unless a test or `python -m controlplane.sim --bug NAME` turns one on;
nothing in production does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

KNOWN: dict[str, str] = {
    "stale_commit": "the hard state is persisted only when term or vote change, so the commit index on disk lags "
    "and a restarted replica rebuilds an old configuration",
    "wal_first_truncate": "the WAL cannot truncate its first stored entry (a conflicting append right after an "
    "installed snapshot kills the Raft loop)",
    "snapshot_wal_gap": "a crash between saving a snapshot and resetting the WAL leaves a log that cannot be "
    "appended to after restart",
    "zombie_leader": "a Raft loop that died leaves the replica answering status as the leader",
    "session_last_seq": "sessions remember only their last seq: pipelined commands and retries are refused "
    "as older although they were applied",
    "wal_length_unchecked": "a WAL record's length is outside its checksum: a corrupt length mid-segment is taken "
    "for a torn tail and the acknowledged entries after it are dropped",
    "early_ack": "every replica's messages leave before its write, not only a leader's appends: a follower's "
    "acknowledgement or vote can be counted and then lost with the power",
    "telemetry_poison": "a telemetry segment whose uav column is not dictionary-encoded raises in apply and stops "
    "every replica at the same index",
    "snapshot_encoded_live": "a snapshot is encoded from the live state after applies resumed, not from what was "
    "captured at its index: it holds later entries' effects",
}

_active: set[str] = set()


def enabled(name: str) -> bool:
    return name in _active


def check(name: str) -> str:
    if name not in KNOWN:
        raise ValueError(f"unknown bug {name!r}; known: {', '.join(sorted(KNOWN))}")
    return name


@contextlib.contextmanager
def switched_on(*names: str) -> Iterator[None]:
    """Re-enable these defects inside the block (this process only)."""
    for name in names:
        check(name)
    before = set(_active)
    _active.update(names)
    try:
        yield
    finally:
        _active.clear()
        _active.update(before)
