"""Each safety check fires on a state that breaks it."""

import pytest

from controlplane.raft.harness import Network
from controlplane.raft.messages import Entry
from controlplane.sim.invariants import InvariantChecker, SafetyViolation


def test_two_leaders_in_one_term_is_caught():
    c = InvariantChecker()
    c.on_leader(1, 5)
    c.on_leader(1, 5)
    c.on_leader(2, 6)
    with pytest.raises(SafetyViolation, match="election safety"):
        c.on_leader(3, 5)


def test_same_index_and_term_with_different_content_is_caught():
    c = InvariantChecker()
    c.on_persisted(1, (Entry(2, 10, b"a"), Entry(2, 11, b"b")), prev_term=1)
    c.on_persisted(2, (Entry(2, 10, b"a"),), prev_term=1)
    with pytest.raises(SafetyViolation, match="log matching"):
        c.on_persisted(3, (Entry(2, 11, b"other"),), prev_term=2)


def test_same_index_and_term_with_a_different_predecessor_is_caught():
    c = InvariantChecker()
    c.on_persisted(1, (Entry(3, 10, b"a"),), prev_term=2)
    with pytest.raises(SafetyViolation, match="log matching"):
        c.on_persisted(2, (Entry(3, 10, b"a"),), prev_term=1)


def test_different_entries_applied_at_one_index_are_caught():
    c = InvariantChecker()
    c.on_applied(1, (Entry(1, 1, b"x"), Entry(1, 2, b"y")), term=1)
    c.on_applied(2, (Entry(1, 1, b"x"),), term=1)
    with pytest.raises(SafetyViolation, match="state machine safety"):
        c.on_applied(2, (Entry(2, 2, b"z"),), term=2)


def test_a_leader_missing_a_committed_entry_is_caught():
    net = Network(3)
    net.elect(1)
    net.propose(1, b"a")
    c = InvariantChecker()
    core = net.core(1)
    c.on_applied(1, tuple(core.log.entries), term=core.term)
    c.on_became_leader(1, core)  # holds everything: fine
    missing = Entry(core.term, core.log.last_index() + 1, b"only-elsewhere")
    c.on_applied(2, (missing,), term=core.term)
    c.on_became_leader(1, core)  # committed in its own term: it may not have it yet
    c.on_applied(3, (missing,), term=core.term - 1)  # ...but this one was committed earlier
    with pytest.raises(SafetyViolation, match="leader completeness"):
        c.on_became_leader(1, core)
