"""Crash at every step: the production persist/ code on the simulated disk, a power loss
after each of its file operations in turn (and several random fates of what was not yet
synced at each), then a restart. Whatever was synced when a persist returned must come back:
term and vote always, the log unless a truncation or snapshot install was under way (Raft
asked for those entries to go). Nothing may be refused as corrupt after a mere crash."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from controlplane.persist import DiskStorage
from controlplane.raft.messages import ConfState, Entry, HardState, Ready, Role, Snapshot, SnapshotMeta
from controlplane.sim.fs import SimCrash, SimFileSystem

DATA = Path("/disk/data")
CONF = ConfState(frozenset({1, 2, 3}))


def ready(entries=(), hs=None, snapshot=None, vote_changed=False):
    return Ready(hs, tuple(entries), snapshot, (), (), (), 0, Role.FOLLOWER, hs.term if hs else 1, vote_changed)


def entries(first, count, term, size=60):
    return [Entry(term, i, bytes([i % 251]) * size) for i in range(first, first + count)]


# A follower's life: appends across segments, votes, an append that replaces its tail
# (after a vote it cast once those entries were written), a snapshot from the leader, its
# own snapshot and compaction.
STEPS = [
    ready(entries(4, 20, 1), HardState(1, 0, 10)),
    ready((), HardState(2, 3, 10), vote_changed=True),
    ready(entries(24, 10, 2), HardState(2, 3, 20)),
    ready((), HardState(3, 2, 20), vote_changed=True),  # voted in term 3 after those entries
    ready(entries(22, 4, 3), HardState(3, 2, 21)),  # the term-3 leader replaces 22..33
    ready((), HardState(3, 2, 25)),  # the commit index alone: written, not fsynced
    ready(entries(26, 30, 3), HardState(3, 2, 50)),
    ready((), HardState(3, 2, 60), snapshot=Snapshot(SnapshotMeta(60, 3, CONF), b"fleet@60")),
    ready(entries(61, 12, 3), HardState(3, 2, 70)),
    ready(entries(70, 2, 4), HardState(4, 5, 70), vote_changed=True),
]


def run_until_crash(fs: SimFileSystem) -> tuple[HardState, tuple[int, int] | None, bool]:
    """Run STEPS; return what was last synced (hard state, last (index, term) of the log)
    and whether a rewrite (truncation, snapshot install) was in flight when it stopped."""
    synced_hs, synced_last, rewriting = HardState(), None, False
    last = None
    try:
        storage = DiskStorage(DATA, cluster="c", node_id=1, segment_bytes=1024, fs=fs)
        storage.bootstrap([1, 2, 3])
        synced_hs, last = HardState(1, 0, 3), (3, 1)
        synced_last = last
        for step in STEPS:
            rewriting = step.snapshot is not None or bool(step.entries and last and step.entries[0].index <= last[0])
            storage.persist(step)
            if step.snapshot is not None:
                last = (step.snapshot.meta.index, step.snapshot.meta.term)
            if step.entries:
                last = (step.entries[-1].index, step.entries[-1].term)
            if step.must_sync():
                synced_hs = HardState(step.hard_state.term, step.hard_state.vote, 0) if step.hard_state else synced_hs
                synced_last, rewriting = last, False
            if step is STEPS[-3]:
                snap = Snapshot(SnapshotMeta(66, 3, CONF), b"own@66")
                storage.save_snapshot(snap)
                storage.compact_log(63)
    except SimCrash:
        return synced_hs, synced_last, rewriting
    return synced_hs, synced_last, rewriting


def operations() -> int:
    fs = SimFileSystem(random.Random(0))
    run_until_crash(fs)
    return fs.operations


@pytest.mark.parametrize("fate", range(6))
def test_a_power_loss_after_any_operation_keeps_everything_synced(fate):
    total = operations()
    assert total > 60
    for crash_at in range(1, total + 1):
        fs = SimFileSystem(random.Random(crash_at * 7 + fate))
        fs.crash_after(crash_at)
        hs, last, rewriting = run_until_crash(fs)
        fs.crash(power_loss=True)
        fs.reboot()
        where = f"power lost before operation {crash_at} of {total} (fate {fate})"
        storage = DiskStorage(DATA, cluster="c", node_id=1, segment_bytes=1024, fs=fs)  # never "corrupt"
        state = storage.load()
        got = state.hard_state
        assert got.term > hs.term or (got.term == hs.term and hs.vote in (0, got.vote)), (
            f"{where}: synced term {hs.term} vote {hs.vote}, recovered {got}"
        )
        indexes = [e.index for e in state.entries]
        assert indexes == list(range(indexes[0], indexes[0] + len(indexes))) if indexes else True, where
        if last is not None and not rewriting:
            terms = {e.index: e.term for e in state.entries}
            covered = state.snapshot is not None and state.snapshot.meta.index >= last[0]
            assert covered or terms.get(last[0]) == last[1], f"{where}: synced entry {last} is gone"
        storage.close()
