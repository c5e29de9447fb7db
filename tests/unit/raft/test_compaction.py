"""Raft §7 log compaction: snapshots, and InstallSnapshot (chunked) for lagging followers."""

from controlplane.raft import RaftConfig
from controlplane.raft.harness import Network
from controlplane.raft.messages import InstallSnapshot


def chunked(nid):
    return RaftConfig(node_id=nid, snapshot_chunk_bytes=16, compaction_keep=0)


def follower_behind_a_snapshot(commands):
    """Node 3 misses `commands` entries that the leader (1) then compacts into a snapshot."""
    net = Network(3, config=chunked)
    net.elect(1)
    net.isolate(3)
    for i in range(commands):
        net.propose(1, b"cmd%d" % i)
    net.replicas[1].take_snapshot()
    net.heal()
    return net


def test_compaction_drops_entries_behind_the_snapshot():
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, compaction_keep=5))
    net.elect(1)
    for i in range(30):
        net.propose(1, b"c%d" % i)
    snap = net.replicas[1].take_snapshot()
    log = net.core(1).log
    assert log.snapshot == snap
    assert log.first_index() == snap.meta.index - 5 + 1  # `compaction_keep` entries remain
    assert log.term(log.first_index() - 1) is not None


def test_a_lagging_follower_catches_up_by_chunked_snapshot():
    net = follower_behind_a_snapshot(40)
    seen = []
    original = net.core(3).step

    def spy(m):
        if isinstance(m, InstallSnapshot):
            seen.append(m)
        original(m)

    net.core(3).step = spy
    net.tick(times=3)
    assert len(seen) > 5 and seen[-1].done  # many 16-byte chunks
    assert [m.offset for m in seen] == sorted(m.offset for m in seen)
    assert net.replicas[3].applied == net.replicas[1].applied
    assert net.core(3).log.snapshot.meta.index == net.core(1).log.snapshot.meta.index
    net.propose(1, b"after")
    net.tick(times=1)  # 3 was still probing when the commit went out: a heartbeat carries it
    assert net.replicas[3].applied[-1] == b"after"


def test_lost_snapshot_chunks_are_resent():
    net = follower_behind_a_snapshot(20)
    dropped = []

    def drop_some(m):
        if isinstance(m, InstallSnapshot) and m.offset in (32, 64) and m.offset not in dropped:
            dropped.append(m.offset)
            return True
        return False

    net.drop_filter = drop_some
    net.tick(times=30)
    assert dropped == [32, 64]
    assert net.replicas[3].applied == net.replicas[1].applied


def test_follower_restart_after_installing_a_snapshot_recovers_it():
    net = follower_behind_a_snapshot(20)
    net.tick(times=3)
    before = list(net.replicas[3].applied)
    net.replicas[3].restart()
    assert net.replicas[3].applied == before  # restored from its own stored snapshot
    net.tick(times=3)
    assert net.replicas[3].applied == net.replicas[1].applied


def test_snapshot_carries_the_configuration():
    from controlplane.raft import ConfChange, ConfChangeOp

    net = Network(3, config=chunked)
    net.elect(1)
    net.core(1).propose_conf_change(ConfChange(ConfChangeOp.REMOVE, 2))
    net.settle()
    net.add_replica(4)
    net.core(1).propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, 4))
    net.settle()
    net.isolate(4)
    net.propose(1, b"x")
    snap = net.replicas[1].take_snapshot()
    assert snap.meta.conf.voters == {1, 3} and snap.meta.conf.learners == {4}
    net.heal()
    net.tick(times=5)
    assert net.core(4).conf == snap.meta.conf


def test_a_newer_snapshot_does_not_restart_a_transfer_in_flight():
    """Found by the simulator: with small chunks and frequent snapshots, every new snapshot
    restarted the transfer from byte 0, and a lagging follower never caught up."""
    net = follower_behind_a_snapshot(40)
    first = net.core(1).log.snapshot.meta.index
    seen = []
    original = net.core(3).step

    def spy(m):
        if isinstance(m, InstallSnapshot):
            seen.append(m)
            if len(seen) == 3:  # mid-transfer, the leader commits more and compacts again
                for i in range(5):
                    net.propose(1, b"more%d" % i)
                net.replicas[1].take_snapshot()
        original(m)

    net.core(3).step = spy
    net.tick(times=3)
    transfer = [m for m in seen if m.meta.index == first]
    assert transfer[-1].done and [m.offset for m in transfer] == sorted({m.offset for m in transfer})
    assert transfer[0].offset == 0 and sum(1 for m in transfer if m.offset == 0) == 1  # never restarted
    assert net.core(1).log.snapshot.meta.index > first
    assert net.replicas[3].applied == net.replicas[1].applied  # and then it caught up
