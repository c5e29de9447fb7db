import json

import pytest

from controlplane import bugs
from controlplane.persist import DiskStorage, FileSnapshotStore, StorageError
from controlplane.raft import RaftConfig, RaftCore
from controlplane.raft.codec import encode_conf_change
from controlplane.raft.messages import (
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)


def drain(disk, core):
    while core.has_ready():
        rd = core.ready()
        disk.persist(rd)
        core.advance(rd)


def bootstrap(path):
    disk = DiskStorage(path, cluster="c", node_id=1)
    disk.bootstrap([1])
    disk.close()


def boot(path, node_id=1):
    disk = DiskStorage(path, cluster="c", node_id=node_id)
    st = disk.load()
    kw = {"snapshot": st.snapshot} if st.snapshot else {}
    return disk, RaftCore(RaftConfig(node_id=node_id), hard_state=st.hard_state, entries=st.entries, **kw)


def test_the_commit_index_survives_a_restart_so_the_configuration_does(tmp_path):
    """Defect 1: the hard state was written only when term or vote changed, so a restarted
    replica rebuilt its configuration from a stale commit index."""
    bootstrap(tmp_path)
    disk, core = boot(tmp_path)
    core.campaign()
    drain(disk, core)
    for learner in (4, 5):
        core.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, learner))
        drain(disk, core)
    core.propose(b"x")
    drain(disk, core)
    assert core.conf.learners == {4, 5}
    disk.close()
    disk, again = boot(tmp_path)
    assert again.conf.learners == {4, 5} and again.log.committed == core.log.committed
    disk.close()
    with bugs.switched_on("stale_commit"):
        disk, stale = boot(tmp_path)
        disk.close()
    assert stale.conf.learners == {4, 5}  # the fix wrote the commit; a stale disk is another story

    with bugs.switched_on("stale_commit"):
        bootstrap(tmp_path / "old")
        disk, old = boot(tmp_path / "old")
        old.campaign()
        drain(disk, old)
        for learner in (4, 5):
            old.propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, learner))
            drain(disk, old)
        disk.wal.close()  # killed: no orderly close
        disk._lock.release()
        disk, again = boot(tmp_path / "old")
        disk.close()
    assert again.conf.learners == set()  # the defect: the configuration went back two steps


def test_a_configuration_change_followed_by_another_counts_as_committed(tmp_path):
    """A torn write can keep new entries and lose the hard state after them; the log itself
    proves every configuration change but the last was committed."""
    disk = DiskStorage(tmp_path, cluster="c", node_id=1)
    conf = [
        Entry(1, i, encode_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, i)), EntryKind.CONF_CHANGE) for i in (1, 2, 3)
    ]
    disk.wal.write(conf, HardState(1, 0, 1))
    disk.close()
    disk = DiskStorage(tmp_path, cluster="c", node_id=1)
    assert disk.load().hard_state.commit == 2
    disk.close()


def test_a_crash_between_saving_a_snapshot_and_resetting_the_log_leaves_an_appendable_log(tmp_path):
    """Defect 3: the saved snapshot and the old log left a gap, and the first append after
    the restart failed."""
    disk = DiskStorage(tmp_path, cluster="c", node_id=1)
    disk.bootstrap([1])
    disk.wal.write([Entry(1, i, b"e") for i in range(2, 10)], HardState(1, 0, 9))
    disk.wal.sync()
    snap = Snapshot(SnapshotMeta(100, 3, ConfState(frozenset({1}))), b"state")
    disk.snapshots.save(snap)  # persist() got this far, then the station lost power
    disk.close()

    disk = DiskStorage(tmp_path, cluster="c", node_id=1)
    state = disk.load()
    assert state.snapshot == snap and state.entries == []
    disk.persist(ready(entries=(Entry(3, 101, b"next"),), hard_state=HardState(3, 0, 101)))
    disk.close()
    disk = DiskStorage(tmp_path, cluster="c", node_id=1)
    assert [e.index for e in disk.load().entries] == [101]
    disk.close()

    with bugs.switched_on("snapshot_wal_gap"):
        DiskStorage(tmp_path / "old", cluster="c", node_id=1).close()
        disk = DiskStorage(tmp_path / "old", cluster="c", node_id=1)
        disk.bootstrap([1])
        disk.snapshots.save(snap)
        disk.close()
        disk = DiskStorage(tmp_path / "old", cluster="c", node_id=1)
        with pytest.raises(StorageError, match="gap"):
            disk.persist(ready(entries=(Entry(3, 101, b"next"),)))
        disk.close()


def ready(entries=(), hard_state=None, snapshot=None):
    return Ready(hard_state, tuple(entries), snapshot, (), (), (), 0, Role.FOLLOWER, 3, vote_changed=True)


def test_an_older_format_is_refused_by_name(tmp_path):
    from controlplane.persist.files import atomic_write
    from controlplane.persist.fs import OS_FILESYSTEM

    tmp_path.mkdir(exist_ok=True)
    atomic_write(OS_FILESYSTEM, tmp_path / "identity", b"RID1", json.dumps({"cluster": "c", "node_id": 1}).encode())
    with pytest.raises(StorageError, match="on-disk format 1"):
        DiskStorage(tmp_path, cluster="c", node_id=1)
    DiskStorage(tmp_path / "x", cluster="c", node_id=1).close()  # and the lock was released on refusal
    DiskStorage(tmp_path / "x", cluster="c", node_id=1).close()


def test_snapshots_keep_the_newest(tmp_path):
    store = FileSnapshotStore(tmp_path, retain=2)
    conf = ConfState(frozenset({1, 2, 3}), frozenset({4}))
    for i in (10, 20, 30):
        store.save(Snapshot(SnapshotMeta(i, 2, conf), b"state-%d" % i))
    assert len(list(tmp_path.glob("snapshot-*"))) == 2
    assert FileSnapshotStore(tmp_path).load() == Snapshot(SnapshotMeta(30, 2, conf), b"state-30")


def test_data_directory_is_bound_to_its_node(tmp_path):
    DiskStorage(tmp_path, cluster="fleet", node_id=1).close()
    with pytest.raises(StorageError, match="node 1, not cluster 'fleet' node 2"):
        DiskStorage(tmp_path, cluster="fleet", node_id=2)


def test_data_directory_is_locked(tmp_path):
    first = DiskStorage(tmp_path, cluster="fleet", node_id=1)
    with pytest.raises(StorageError, match="in use"):
        DiskStorage(tmp_path, cluster="fleet", node_id=1)
    first.close()


def test_recovery_rebuilds_the_core_exactly(tmp_path):
    """Drive a single-node core through proposals and a snapshot, persisting every Ready;
    a core rebuilt from the directory has the same term, vote, log and configuration."""
    disk = DiskStorage(tmp_path, cluster="c", node_id=1)
    disk.bootstrap([1])
    with pytest.raises(StorageError, match="refusing to bootstrap"):
        disk.bootstrap([1])
    disk.close()

    disk, core = boot(tmp_path)
    core.campaign()
    drain(disk, core)
    for i in range(300):
        core.propose(b"cmd%d" % i)
        if i % 7 == 0:
            drain(disk, core)
    drain(disk, core)
    snap = Snapshot(SnapshotMeta(core.log.applied, core.term, core.conf), b"sm-state")
    disk.save_snapshot(snap)
    disk.compact_log(core.log.applied - 10)
    core.compact(snap)
    core.propose(b"after")
    drain(disk, core)
    expected = (core.term, core.vote, core.log.last_index(), core.conf, core.log.entries[-1])
    disk.close()

    disk2, again = boot(tmp_path)
    assert (again.term, again.vote, again.log.last_index(), again.conf, again.log.entries[-1]) == expected
    assert again.log.snapshot == snap
    assert again.log.committed == expected[2]
    disk2.close()


def test_the_peers_heard_from_survive_a_restart_and_a_damaged_record_is_refused_by_name(tmp_path):
    from controlplane.persist import CorruptionError, read_peers_heard
    from controlplane.persist.storage import PEERS_HEARD_FILE

    bootstrap(tmp_path)
    assert read_peers_heard(tmp_path) == frozenset()
    disk = DiskStorage(tmp_path, cluster="c", node_id=1)
    assert disk.load().peers_heard == frozenset()
    disk.record_peers_heard(frozenset({2, 3}))
    disk.close()
    assert read_peers_heard(tmp_path) == {2, 3}  # read without the directory's lock
    disk = DiskStorage(tmp_path, cluster="c", node_id=1)
    assert disk.load().peers_heard == {2, 3}
    disk.close()

    path = tmp_path / PEERS_HEARD_FILE
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match=PEERS_HEARD_FILE):
        read_peers_heard(tmp_path)
