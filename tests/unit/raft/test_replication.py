"""Raft §5.3 log replication: batching, pipelining, fast backtracking, commit rules."""

from controlplane.raft import RaftConfig, Role
from controlplane.raft.core import EAGER_COMMIT_BYTES
from controlplane.raft.harness import Network
from controlplane.raft.messages import AppendEntries, AppendEntriesResponse
from controlplane.raft.progress import ProgressState


def _appends(msgs):
    return [m for m in msgs if isinstance(m, AppendEntries)]


def _after_one_round(net):
    """Leader 1's appends delivered, each follower's answers back: what the leader sends then."""
    answers = []
    for m in net.replicas[1].process():
        net.core(m.dst).step(m)
        answers += net.replicas[m.dst].process()
    for m in answers:
        net.core(1).step(m)
    return net.replicas[1].process()


def test_proposals_replicate_and_apply_everywhere_in_order():
    net = Network(3)
    net.elect(1)
    for i in range(50):
        net.propose(1, b"cmd%d" % i)
    expected = [b"cmd%d" % i for i in range(50)]
    assert net.replicas[1].applied == expected
    net.heartbeat()
    assert all(r.applied == expected for r in net.replicas.values())


def test_a_commit_rides_on_the_next_append_or_heartbeat_not_a_message_of_its_own():
    net = Network(3)
    net.elect(1)
    net.heartbeat()
    net.core(1).propose(b"first")
    sent = net.replicas[1].process()
    assert sorted(type(m).__name__ for m in sent) == ["AppendEntries", "AppendEntries"]
    answers = []
    for m in sent:
        net.core(m.dst).step(m)
        answers += net.replicas[m.dst].process()
    assert len(answers) == 2 and all(isinstance(m, AppendEntriesResponse) for m in answers)
    for m in answers:
        net.core(1).step(m)
    # Committing sent nothing: the followers hear of it with what the leader sends next.
    assert net.replicas[1].process() == []
    committed = net.core(1).log.committed
    assert net.core(1).log.term(committed) == net.core(1).term and net.replicas[1].applied[-1] == b"first"
    assert all(net.core(nid).log.committed < committed for nid in (2, 3))
    net.core(1).propose(b"second")
    carried = _appends(net.replicas[1].process())
    assert len(carried) == 2 and all(m.commit == committed for m in carried)
    net.send(carried)
    net.settle()
    assert all(net.replicas[nid].applied[-1] == b"first" for nid in (2, 3))
    net.heartbeat()
    assert all(r.applied[-1] == b"second" for r in net.replicas.values())


def test_a_committed_batch_is_told_at_once_so_followers_apply_it_before_the_next_round():
    net = Network(3)
    net.elect(1)
    net.heartbeat()
    net.core(1).propose_many([b"a", b"b"])
    told = _after_one_round(net)
    committed = net.core(1).log.committed
    assert net.replicas[1].applied[-2:] == [b"a", b"b"]
    assert len(told) == 2 and all(isinstance(m, AppendEntries) and not m.entries for m in told)
    assert all(m.commit == committed for m in told)
    net.send(told)
    assert all(r.applied[-2:] == [b"a", b"b"] for r in net.replicas.values())


def test_a_large_committed_entry_is_told_at_once_so_followers_apply_it_without_waiting_a_tick():
    net = Network(3)
    net.elect(1)
    net.heartbeat()
    large = b"t" * EAGER_COMMIT_BYTES
    net.core(1).propose(large)
    told = _after_one_round(net)
    committed = net.core(1).log.committed
    assert net.replicas[1].applied[-1] == large
    assert len(told) == 2 and all(isinstance(m, AppendEntries) and not m.entries for m in told)
    assert all(m.commit == committed for m in told)
    net.send(told)
    assert all(r.applied[-1] == large for r in net.replicas.values())
    # One byte less is a lone small commit: it rides on the next message.
    net.core(1).propose(b"s" * (EAGER_COMMIT_BYTES - 1))
    assert _after_one_round(net) == []


def test_proposals_between_readies_go_out_as_one_batch():
    net = Network(3)
    net.elect(1)
    net.tick(times=2)
    leader = net.core(1)
    for i in range(100):
        leader.propose(b"x%d" % i)
    rd = leader.ready()
    appends = _appends(rd.messages)
    assert len(appends) == 2  # one per follower
    assert all(len(m.entries) == 100 for m in appends)


def test_batches_respect_max_entries_and_max_bytes():
    cfg = lambda nid: RaftConfig(node_id=nid, max_entries_per_msg=10, max_bytes_per_msg=2000)  # noqa: E731
    net = Network(3, config=cfg)
    net.elect(1)
    net.tick(times=2)
    leader = net.core(1)
    for _ in range(25):
        leader.propose(b"e" * 10)
    appends = _appends(leader.ready().messages)
    assert [len(m.entries) for m in appends if m.dst == 2] == [10, 10, 5]
    for _ in range(10):
        leader.propose(b"b" * 500)
    net.settle()
    leader.propose_many([b"b" * 500] * 10)
    big = [m for m in _appends(leader.ready().messages) if m.dst == 2]
    assert big and all(sum(e.size() for e in m.entries) <= 2000 for m in big)


def test_pipelining_window_limits_in_flight_messages():
    cfg = lambda nid: RaftConfig(node_id=nid, max_entries_per_msg=1, max_inflight_msgs=4)  # noqa: E731
    net = Network(3, config=cfg)
    net.elect(1)
    net.tick(times=2)
    leader = net.core(1)
    assert leader.progress[2].state is ProgressState.REPLICATE
    leader.propose_many([b"p%d" % i for i in range(10)])
    to2 = [m for m in _appends(leader.ready().messages) if m.dst == 2]
    assert len(to2) == 4  # window full; the rest waits for acknowledgements
    for m in to2:
        net.replicas[2].core.step(m)
    acks = [m for m in net.replicas[2].process() if isinstance(m, AppendEntriesResponse)]
    for a in acks:
        leader.step(a)
    more = [m for m in _appends(leader.ready().messages) if m.dst == 2 and m.entries]
    assert len(more) == 4


def test_commit_requires_a_majority():
    net = Network(5)
    net.elect(1)
    commit = net.core(1).log.committed
    net.isolate(4)
    net.isolate(5)
    net.cut.discard((2, 1))  # a one-way cut: 2 hears the leader but its acks are lost
    net.cut.add((2, 1))
    net.propose(1, b"x")
    assert net.core(1).log.committed == commit  # only 1 and 3 have acknowledged
    net.heal()
    net.tick(times=2)
    assert net.core(1).log.committed == commit + 1


def test_fast_backtracking_skips_a_whole_conflicting_term():
    cfg = lambda nid: RaftConfig(node_id=nid, check_quorum=False, pre_vote=False)  # noqa: E731
    net = Network(3, config=cfg)
    net.elect(1)
    net.propose(1, b"base")
    net.isolate(1)
    for i in range(30):  # 30 entries in the old leader's term that will never commit
        net.core(1).propose(b"stale%d" % i)
    net.settle()
    net.heal()
    net.isolate(1)
    net.cut -= {(2, 3), (3, 2)}
    net.elect(2)
    net.propose(2, b"new")
    net.heal()
    rejections = []
    original = net.replicas[2].core.step

    def spy(m):
        if isinstance(m, AppendEntriesResponse) and not m.success:
            rejections.append(m)
        original(m)

    net.replicas[2].core.step = spy
    net.tick(2, times=2)
    assert len(rejections) <= 2  # not one round trip per stale entry
    assert net.replicas[1].applied == net.replicas[2].applied
    assert b"stale0" not in net.replicas[1].applied


def test_entries_of_a_previous_term_are_not_committed_by_counting():
    # Raft §5.4.2 (figure 8): a new leader cannot commit an old-term entry by replica count
    # alone; it commits it only together with an entry of its own term.
    cfg = lambda nid: RaftConfig(node_id=nid, check_quorum=False, pre_vote=False)  # noqa: E731
    net = Network(3, config=cfg)
    net.elect(1)
    net.isolate(3)
    net.cut -= {(1, 2), (2, 1)}
    net.core(1).propose(b"old")
    msgs = net.replicas[1].process()
    old_index = net.core(1).log.last_index()
    # The entry reaches 2 only; the acknowledgements are lost; 1 then crashes.
    for m in msgs:
        if m.dst == 2:
            net.core(2).step(m)
    net.replicas[2].process()
    net.isolate(1)
    net.cut -= {(2, 3), (3, 2)}
    net.drop_filter = lambda m: isinstance(m, AppendEntries) and m.dst == 3 and m.src == 2
    net.elect(2)
    assert net.core(2).role is Role.LEADER
    # 2 holds "old" (previous term) on a majority-to-be, but 3 has not got it yet.
    assert net.core(2).log.committed < old_index
    net.drop_filter = None
    net.tick(2, times=2)
    assert net.core(2).log.committed > old_index  # committed with 2's own no-op


def test_follower_truncates_conflicting_uncommitted_entries():
    cfg = lambda nid: RaftConfig(node_id=nid, check_quorum=False, pre_vote=False)  # noqa: E731
    net = Network(3, config=cfg)
    net.elect(1)
    net.isolate(1)
    net.core(1).propose(b"lost")
    net.settle()
    net.heal()
    net.isolate(1)
    net.cut -= {(2, 3), (3, 2)}
    net.elect(2)
    net.propose(2, b"kept")
    net.heal()
    net.tick(2, times=2)
    assert b"lost" not in net.replicas[1].applied
    assert net.replicas[1].applied == net.replicas[2].applied == net.replicas[3].applied == [b"kept"]


def test_a_leaders_appends_may_leave_before_its_own_write_but_never_a_commit_of_them():
    net = Network(3)
    net.elect(1)
    net.tick(times=2)
    leader = net.core(1)
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.entries and _appends(rd.messages) and rd.send_before_persist
    assert all(m.commit < rd.entries[0].index for m in _appends(rd.messages))


def test_a_lone_voter_commits_its_entries_at_once_so_it_sends_nothing_before_writing_them():
    net = Network(1)
    net.elect(1)
    leader = net.core(1)
    leader.propose(b"x")
    rd = leader.ready()
    assert rd.committed_entries and rd.entries and not rd.send_before_persist


def test_a_vote_is_written_before_it_is_told():
    net = Network(3)
    net.elect(1)
    candidate = net.core(2)
    candidate.campaign(transfer=True)  # no pre-vote: a new term and a vote for itself
    rd = candidate.ready()
    assert rd.messages and rd.vote_changed and not rd.send_before_persist
    voter = net.core(3)
    for m in rd.messages:
        if m.dst == 3:
            voter.step(m)
    granted = voter.ready()
    assert granted.messages and granted.vote_changed and not granted.send_before_persist
