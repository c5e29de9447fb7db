"""A founder with an empty data directory: bootstrap, or refuse as one back without its disk."""

from controlplane.blank_founder import PeerAnswer, why_it_may_have_taken_part

FRESH = PeerAnswer(term=1, peers_heard=frozenset())


def test_a_group_that_has_not_run_lets_it_bootstrap_even_with_peers_silent():
    assert why_it_may_have_taken_part(2, {"node_1": None, "node_3": None}) is None
    assert why_it_may_have_taken_part(2, {"node_1": FRESH, "node_3": None}) is None


def test_a_founder_later_than_the_others_election_bootstraps_when_none_has_heard_from_it():
    ran = PeerAnswer(term=3, peers_heard=frozenset({1, 3}))
    assert why_it_may_have_taken_part(2, {"node_1": ran, "node_3": ran}) is None


def test_a_peer_that_has_heard_from_it_is_proof_it_took_part():
    answers = {"node_1": PeerAnswer(5, frozenset({2, 3})), "node_3": None}
    assert why_it_may_have_taken_part(2, answers) == "node_1 has had messages from it"
    both = {"node_1": PeerAnswer(5, frozenset({2})), "node_3": PeerAnswer(5, frozenset({1, 2}))}
    assert why_it_may_have_taken_part(2, both) == "node_1, node_3 have had messages from it"


def test_once_the_group_has_run_a_silent_peer_may_be_the_one_that_heard_from_it():
    reason = why_it_may_have_taken_part(2, {"node_1": PeerAnswer(4, frozenset({3})), "node_3": None})
    assert reason is not None and "node_1 shows the group has run" in reason and "node_3 did not answer" in reason
