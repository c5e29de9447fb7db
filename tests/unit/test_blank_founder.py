"""A founder with an empty data directory: bootstrap, or refuse as one back without its disk."""

import asyncio

from controlplane.blank_founder import PeerAnswer, ask_until_sure, why_it_may_have_taken_part

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


RAN = PeerAnswer(term=4, peers_heard=frozenset({3}))


def asked_in_turn(*rounds):
    """An `ask` that gives each round of answers in turn (the last one from then on)."""
    calls = []

    async def ask():
        calls.append(None)
        return rounds[min(len(calls), len(rounds)) - 1]

    return ask, calls


def test_a_silent_peer_is_asked_again_and_its_late_answer_decides():
    ask, calls = asked_in_turn(
        {"node_1": RAN, "node_3": None}, {"node_1": RAN, "node_3": None}, {"node_1": RAN, "node_3": RAN}
    )
    assert asyncio.run(ask_until_sure(2, ask, patience=10, pause=0.01)) is None
    assert len(calls) == 3


def test_peers_silent_past_the_patience_mean_a_refusal():
    ask, calls = asked_in_turn({"node_1": RAN, "node_3": None})
    reason = asyncio.run(ask_until_sure(2, ask, patience=0.1, pause=0.01))
    assert reason is not None and "node_3 did not answer" in reason and len(calls) > 1


def test_proof_that_it_took_part_is_not_asked_again():
    ask, calls = asked_in_turn({"node_1": PeerAnswer(4, frozenset({2})), "node_3": None})
    assert asyncio.run(ask_until_sure(2, ask, patience=10, pause=0.01)) == "node_1 has had messages from it"
    assert len(calls) == 1
