"""Raft §6 client interaction: ReadIndex for linearizable reads; §3.10 leadership transfer."""

import pytest

from controlplane.raft import NotLeaderError, ProposalRejected, RaftConfig, Role
from controlplane.raft.harness import Network
from controlplane.raft.messages import AppendEntriesResponse, HeartbeatResponse


def test_read_index_on_the_leader_after_a_heartbeat_quorum():
    net = Network(3)
    net.elect(1)
    net.propose(1, b"a")
    net.core(1).read_index(b"r1")
    net.settle()
    [rs] = net.replicas[1].read_states
    assert rs.context == b"r1" and rs.index == net.core(1).log.committed


def test_read_index_waits_for_a_quorum_of_heartbeat_acks():
    net = Network(3)
    net.elect(1)
    net.drop_filter = lambda m: isinstance(m, HeartbeatResponse)
    net.core(1).read_index(b"r")
    net.settle()
    assert net.replicas[1].read_states == []  # a deposed leader must not answer alone
    net.heal()
    net.tick(times=1)
    assert [rs.context for rs in net.replicas[1].read_states] == [b"r"]


def test_read_index_waits_for_the_new_leaders_first_commit():
    net = Network(3)
    net.drop_filter = lambda m: isinstance(m, AppendEntriesResponse)
    net.elect(1)
    net.core(1).read_index(b"early")
    net.settle()
    assert net.replicas[1].read_states == []
    net.heal()
    net.tick(times=2)
    [rs] = net.replicas[1].read_states
    assert rs.index >= net.core(1).log.last_index() - 0  # covers the new term's no-op


def test_follower_read_is_forwarded_to_the_leader():
    net = Network(3)
    net.elect(1)
    net.propose(1, b"v")
    net.core(2).read_index(b"f")
    net.settle()
    [rs] = net.replicas[2].read_states
    assert rs.context == b"f" and rs.index == net.core(1).log.committed


def test_read_without_a_known_leader_is_refused():
    net = Network(3)
    with pytest.raises(NotLeaderError):
        net.core(2).read_index(b"x")


def test_leadership_transfer_to_an_up_to_date_follower():
    net = Network(3)
    net.elect(1)
    net.propose(1, b"a")
    net.core(1).transfer_leadership(3)
    net.settle()
    assert net.core(3).role is Role.LEADER and net.core(1).role is Role.FOLLOWER
    assert net.core(1).leader_id == 3


def test_transfer_waits_for_the_target_to_catch_up():
    net = Network(3)
    net.elect(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, b"m%d" % i)
    net.heal()
    net.core(1).transfer_leadership(3)
    with pytest.raises(ProposalRejected, match="transferred"):
        net.core(1).propose(b"blocked")
    net.settle()
    net.tick(times=2)
    assert net.core(3).role is Role.LEADER
    assert net.replicas[3].applied[-5:] == [b"m%d" % i for i in range(5)]


def test_transfer_to_an_unreachable_node_is_abandoned_after_an_election_timeout():
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, check_quorum=False))
    net.elect(1)
    net.isolate(3)
    net.core(1).transfer_leadership(3)
    net.tick(1, times=12)
    assert net.core(1).role is Role.LEADER and net.core(1).transfer_target == 0
    net.core(1).propose(b"accepted-again")


def test_followers_refuse_proposals_with_a_leader_hint():
    net = Network(3)
    net.elect(2)
    with pytest.raises(NotLeaderError) as info:
        net.core(1).propose(b"x")
    assert info.value.leader_hint == 2
