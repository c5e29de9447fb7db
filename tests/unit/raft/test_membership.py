"""Raft thesis §4: single-server membership changes and learners (non-voting members)."""

import pytest

from controlplane.raft import ConfChange, ConfChangeOp, ProposalRejected, Role
from controlplane.raft.harness import Network
from controlplane.raft.messages import AppendEntriesResponse


def change(op, node):
    return ConfChange(op, node)


def test_founders_learn_their_configuration_from_the_log():
    net = Network(3)
    assert all(r.core.conf.voters == {1, 2, 3} for r in net.replicas.values())


def test_add_learner_catch_up_and_promote():
    net = Network(3)
    net.elect(1)
    for i in range(20):
        net.propose(1, b"c%d" % i)
    net.add_replica(4)
    net.core(1).propose_conf_change(change(ConfChangeOp.ADD_LEARNER, 4))
    net.settle()
    net.tick(times=3)
    assert net.replicas[4].applied == net.replicas[1].applied  # learned the whole log
    assert net.core(4).conf.learners == {4} and net.core(4).conf.voters == {1, 2, 3}
    # A learner does not count toward commit: cut two voters, nothing commits.
    net.isolate(2)
    net.isolate(3)
    commit = net.core(1).log.committed
    net.propose(1, b"needs-a-voter")
    assert net.core(1).log.committed == commit
    net.heal()
    net.tick(times=2)
    net.core(1).propose_conf_change(change(ConfChangeOp.ADD_VOTER, 4))
    net.settle()
    net.heartbeat()
    assert all(r.core.conf.voters == {1, 2, 3, 4} for r in net.replicas.values())


def test_promoted_learner_votes_and_counts_in_quorum():
    net = Network(3)
    net.elect(1)
    net.add_replica(4)
    net.core(1).propose_conf_change(change(ConfChangeOp.ADD_LEARNER, 4))
    net.settle()
    net.tick(times=2)
    net.core(1).propose_conf_change(change(ConfChangeOp.ADD_VOTER, 4))
    net.settle()
    net.tick(times=2)
    net.isolate(3)
    commit = net.core(1).log.committed
    net.propose(1, b"three-of-four")
    assert net.core(1).log.committed == commit + 1  # 1, 2 and 4 are a majority of 4


def test_remove_follower_shrinks_the_quorum():
    net = Network(3)
    net.elect(1)
    net.core(1).propose_conf_change(change(ConfChangeOp.REMOVE, 3))
    net.settle()
    assert net.core(1).conf.voters == {1, 2}
    net.isolate(3)
    net.propose(1, b"two-of-two")
    net.heartbeat()
    assert net.replicas[2].applied[-1] == b"two-of-two"


def test_removed_leader_steps_down_and_the_rest_elect():
    net = Network(3)
    net.elect(1)
    net.core(1).propose_conf_change(change(ConfChangeOp.REMOVE, 1))
    net.settle()
    assert net.core(1).role is Role.FOLLOWER
    # It told them the removal committed: no heartbeat of its own would.
    assert all(net.core(nid).conf.voters == {2, 3} for nid in (2, 3))
    net.isolate(1)
    net.tick(times=40)
    assert net.leader() in (2, 3)
    assert net.core(net.leader()).conf.voters == {2, 3}


def test_one_change_at_a_time():
    net = Network(3)
    net.elect(1)
    net.add_replica(4)
    net.isolate(2)
    net.isolate(3)  # the first change cannot commit
    net.core(1).propose_conf_change(change(ConfChangeOp.ADD_LEARNER, 4))
    with pytest.raises(ProposalRejected, match="pending"):
        net.core(1).propose_conf_change(change(ConfChangeOp.REMOVE, 3))


def test_a_new_leader_changes_membership_only_after_committing_in_its_term():
    net = Network(3)
    net.drop_filter = lambda m: isinstance(m, AppendEntriesResponse)  # the no-op cannot commit
    net.elect(1)
    assert net.core(1).role is Role.LEADER
    with pytest.raises(ProposalRejected, match="pending"):
        net.core(1).propose_conf_change(change(ConfChangeOp.REMOVE, 3))
    net.heal()
    net.tick(times=2)
    net.core(1).propose_conf_change(change(ConfChangeOp.REMOVE, 3))
    net.settle()
    assert net.core(1).conf.voters == {1, 2}


def test_refuses_to_remove_the_last_voter_or_demote_a_voter():
    net = Network(1)
    net.elect(1)
    with pytest.raises(ProposalRejected, match="last voter"):
        net.core(1).propose_conf_change(change(ConfChangeOp.REMOVE, 1))
    with pytest.raises(ProposalRejected, match="is a voter"):
        net.core(1).propose_conf_change(change(ConfChangeOp.ADD_LEARNER, 1))
