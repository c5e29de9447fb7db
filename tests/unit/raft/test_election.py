"""Raft §5.2 leader election, with pre-vote (§9.6) and check-quorum (§6.2)."""

from controlplane.raft import RaftConfig, Role
from controlplane.raft.harness import Network
from controlplane.raft.messages import RequestVote


def test_a_single_node_elects_itself_on_timeout():
    net = Network(1)
    net.tick(times=25)
    assert net.core(1).role is Role.LEADER


def test_election_by_timeout_elects_exactly_one_leader():
    for seed in range(20):
        net = Network(5, seed=seed)
        net.tick(times=40)
        leaders = [n for n, r in net.replicas.items() if r.core.role is Role.LEADER]
        assert len(leaders) == 1, (seed, leaders)
        term = net.core(leaders[0]).term
        assert all(r.core.leader_id == leaders[0] and r.core.term == term for r in net.replicas.values())


def test_randomized_timeouts_lie_in_one_to_two_election_timeouts():
    net = Network(3)
    seen = set()
    core = net.core(1)
    for _ in range(200):
        core._reset_timers()
        seen.add(core.randomized_timeout)
    assert min(seen) == 10 and max(seen) == 19 and len(seen) > 5


def test_a_candidate_needs_a_majority():
    net = Network(5)
    for nid in (3, 4, 5):
        net.isolate(nid)
    net.elect(1)
    assert net.core(1).role is not Role.LEADER
    net.heal()
    net.cut.update({(1, 5), (5, 1), (1, 4), (4, 1)})
    net.elect(1)
    assert net.core(1).role is Role.LEADER  # 1, 2, 3 form a majority


def test_each_node_votes_once_per_term():
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, pre_vote=False))
    core = net.core(3)
    term = core.term + 1
    core.step(RequestVote(1, 3, term, 100, 100))
    core.step(RequestVote(2, 3, term, 100, 100))
    responses = core.ready().messages
    granted = [m for m in responses if getattr(m, "granted", False)]
    assert [m.dst for m in granted] == [1]
    assert core.vote == 1


def test_vote_refused_to_a_candidate_with_a_stale_log():
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, pre_vote=False, check_quorum=False))
    net.elect(1)
    net.propose(1, b"a")
    net.isolate(3)
    net.propose(1, b"b")
    net.heal()
    # 3 missed entry "b": its log is behind 2's, so 2 refuses.
    net.cut.update({(3, 1), (1, 3)})
    net.elect(3)
    assert net.core(3).role is not Role.LEADER
    assert net.core(2).vote != 3


def test_pre_vote_keeps_a_partitioned_node_from_inflating_terms():
    net = Network(3)
    net.elect(1)
    term = net.core(1).term
    net.isolate(3)
    net.tick(3, times=200)
    assert net.core(3).term == term  # pre-votes fail, so the term never rises
    net.heal()
    net.tick(times=5)
    assert net.core(1).role is Role.LEADER and net.core(1).term == term


def test_without_pre_vote_a_rejoining_node_disrupts_the_leader():
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, pre_vote=False, check_quorum=False))
    net.elect(1)
    term = net.core(1).term
    net.isolate(3)
    net.tick(3, times=50)
    assert net.core(3).term > term
    net.heal()
    net.tick(times=1)
    assert net.core(1).term > term  # the contrast that motivates pre-vote


def test_check_quorum_makes_an_isolated_leader_step_down():
    net = Network(3)
    net.elect(1)
    net.isolate(1)
    net.tick(1, times=25)
    assert net.core(1).role is Role.FOLLOWER


def test_without_check_quorum_an_isolated_leader_stays():
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, check_quorum=False))
    net.elect(1)
    net.isolate(1)
    net.tick(1, times=25)
    assert net.core(1).role is Role.LEADER


def test_leader_lease_ignores_votes_while_the_leader_is_heard():
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, pre_vote=False))
    net.elect(1)
    term = net.core(1).term
    net.core(2).step(RequestVote(3, 2, term + 1, 1000, 1000))
    assert net.core(2).term == term and net.core(2).vote == 1


def test_a_learner_never_campaigns():
    from controlplane.raft import ConfChange, ConfChangeOp

    net = Network(3)
    net.elect(1)
    net.add_replica(4)
    net.core(1).propose_conf_change(ConfChange(ConfChangeOp.ADD_LEARNER, 4))
    net.settle()
    net.tick(times=3)
    net.isolate(4)
    net.tick(4, times=100)
    assert net.core(4).role is Role.FOLLOWER and 4 in net.core(4).conf.learners
