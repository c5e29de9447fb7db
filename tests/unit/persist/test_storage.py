import pytest

from controlplane.persist import CorruptionError, DiskStorage, FileSnapshotStore, FileStableStore, StorageError
from controlplane.raft import RaftConfig, RaftCore
from controlplane.raft.messages import ConfState, HardState, Snapshot, SnapshotMeta


def test_hard_state_round_trip_and_atomic_replace(tmp_path):
    store = FileStableStore(tmp_path)
    assert store.load() == HardState()
    store.save(HardState(3, 2, 10))
    store.save(HardState(4, 0, 11))
    assert FileStableStore(tmp_path).load() == HardState(4, 0, 11)
    assert not list(tmp_path.glob("*.tmp"))


def test_corrupt_hard_state_is_refused(tmp_path):
    FileStableStore(tmp_path).save(HardState(3, 2, 10))
    path = tmp_path / "hardstate"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptionError, match="hardstate"):
        FileStableStore(tmp_path).load()


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

    def boot():
        d = DiskStorage(tmp_path, cluster="c", node_id=1)
        st = d.load()
        kw = {"snapshot": st.snapshot} if st.snapshot else {}
        return d, RaftCore(RaftConfig(node_id=1), hard_state=st.hard_state, entries=st.entries, **kw)

    def drain(d, core):
        while core.has_ready():
            rd = core.ready()
            d.persist(rd)
            core.advance(rd)

    disk, core = boot()
    core.campaign()
    drain(disk, core)
    for i in range(300):
        core.propose(b"cmd%d" % i)
        if i % 7 == 0:
            drain(disk, core)
    drain(disk, core)
    snap = Snapshot(SnapshotMeta(core.log.applied, core.term, core.conf), b"sm-state")
    disk.save_snapshot(snap, compact_through=core.log.applied - 10)
    core.compact(snap)
    core.propose(b"after")
    drain(disk, core)
    expected = (core.term, core.vote, core.log.last_index(), core.conf, core.log.entries[-1])
    disk.close()

    disk2, again = boot()
    assert (again.term, again.vote, again.log.last_index(), again.conf, again.log.entries[-1]) == expected
    assert again.log.snapshot == snap
    assert again.log.committed == expected[2]
    disk2.close()
