"""Raft's safety properties (Figure 3 of the paper), checked by a global observer after
every step of the simulation. Each check is incremental: it looks only at what changed."""

from __future__ import annotations

from controlplane.raft.core import RaftCore
from controlplane.raft.messages import Entry


class SafetyViolation(AssertionError):
    """One of Raft's safety properties does not hold."""


class InvariantChecker:
    def __init__(self, *, raise_on_violation: bool = True) -> None:
        self.raise_on_violation = raise_on_violation
        self.leader_of_term: dict[int, int] = {}
        # (index, term) -> (kind, data, term of the previous entry): log matching by induction.
        self.entry_identity: dict[tuple[int, int], tuple[int, bytes, int | None]] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}  # index -> (term, data)
        # index -> the lowest term any replica was in when it applied the entry: at least the
        # term of the leader that committed it (a replica applies only what a leader of its
        # current term, or its own durable state, told it was committed).
        self.commit_term: dict[int, int] = {}
        self.max_committed = 0
        self.violations: list[str] = []

    def fail(self, message: str) -> None:
        self.violations.append(message)
        if self.raise_on_violation:
            raise SafetyViolation(message)

    def on_leader(self, node: int, term: int) -> None:
        """Election safety: at most one leader per term."""
        other = self.leader_of_term.setdefault(term, node)
        if other != node:
            self.fail(f"election safety: nodes {other} and {node} both led term {term}")

    def on_persisted(self, node: int, entries: tuple[Entry, ...], prev_term: int | None) -> None:
        """Log matching: an (index, term) pair always names the same entry with the same
        predecessor term; by induction, equal (index, term) means equal prefixes."""
        for e in entries:
            identity = (int(e.kind), e.data, prev_term)
            seen = self.entry_identity.setdefault((e.index, e.term), identity)
            if seen != identity:
                self.fail(f"log matching: node {node} holds a different entry at index {e.index} term {e.term}")
            prev_term = e.term

    def on_applied(self, node: int, entries: tuple[Entry, ...], term: int) -> None:
        """State machine safety: no two nodes apply different entries at one index. `term`
        is the applying node's current term."""
        for e in entries:
            self.commit_term[e.index] = min(term, self.commit_term.get(e.index, term))
            seen = self.committed.setdefault(e.index, (e.term, e.data))
            if seen != (e.term, e.data):
                self.fail(
                    f"state machine safety: node {node} applied (term {e.term}) at index {e.index}, "
                    f"another node applied term {seen[0]} there"
                )
            self.max_committed = max(self.max_committed, e.index)

    def on_became_leader(self, node: int, core: RaftCore) -> None:
        """Leader completeness (§5.4): the leader of a term holds every entry committed in an
        earlier term (those its snapshot covers are in the snapshot). An entry committed in
        a later term need not be there: leaders of two terms can coexist for a while."""
        log = core.log
        for index in range(log.snap_index + 1, self.max_committed + 1):
            want = self.committed.get(index)
            if want is None or self.commit_term[index] >= core.term:
                continue
            if log.term(index) != want[0]:
                self.fail(
                    f"leader completeness: node {node} leads term {core.term} without committed "
                    f"entry {index} (term {want[0]}); it has term {log.term(index)}"
                )
