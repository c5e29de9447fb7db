"""The core's in-memory view of the log: a snapshot point followed by entries, split into a
stable prefix (the caller has persisted it) and an unstable suffix (handed out in Ready)."""

from __future__ import annotations

from controlplane.raft.messages import Entry, Snapshot


class LogError(RuntimeError):
    """An operation that would break the log's invariants (a bug in the caller or core)."""


class RaftLog:
    def __init__(self, snapshot: Snapshot, entries: list[Entry], commit: int) -> None:
        self.snapshot = snapshot  # the latest snapshot; entries start right after it
        self.snap_index = snapshot.meta.index
        self.snap_term = snapshot.meta.term
        # A restarted node may have kept entries the snapshot covers; start after it. If its
        # entry at the snapshot point disagrees with the snapshot, what follows diverged too.
        at_snap = [e for e in entries if e.index == self.snap_index]
        if at_snap and at_snap[0].term != self.snap_term:
            entries = []
        entries = [e for e in entries if e.index > self.snap_index]
        expected = self.snap_index + 1
        for e in entries:
            if e.index != expected:
                raise LogError(f"entries are not contiguous: expected index {expected}, got {e.index}")
            expected += 1
        self.entries: list[Entry] = list(entries)
        self.stable = self.last_index()  # highest index the caller has persisted
        if not self.snap_index <= commit <= self.last_index():
            commit = max(self.snap_index, min(commit, self.last_index()))
        self.committed = commit
        self.applied = self.snap_index  # the state machine starts from the snapshot
        self.applying = self.snap_index  # handed out for applying, not yet advanced
        self.pending_snapshot: Snapshot | None = None  # received, not yet persisted

    # --- queries ----------------------------------------------------------------------------

    def first_index(self) -> int:
        return self.snap_index + 1

    def last_index(self) -> int:
        return self.snap_index + len(self.entries)

    def last_term(self) -> int:
        return self.entries[-1].term if self.entries else self.snap_term

    def term(self, index: int) -> int | None:
        """The term of the entry at index; None when compacted away or not yet written."""
        if index == self.snap_index:
            return self.snap_term
        if index < self.snap_index or index > self.last_index():
            return None
        return self.entries[index - self.snap_index - 1].term

    def data_size(self, index: int) -> int:
        """Bytes of the entry's data at index; 0 when compacted away or not yet written."""
        if index <= self.snap_index or index > self.last_index():
            return 0
        return len(self.entries[index - self.snap_index - 1].data)

    def match_term(self, index: int, term: int) -> bool:
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """Raft §5.4.1: is a candidate's log at least as up to date as ours?"""
        return last_term > self.last_term() or (last_term == self.last_term() and last_index >= self.last_index())

    def slice(self, lo: int, hi: int, max_entries: int, max_bytes: int) -> list[Entry]:
        """Entries [lo, hi), at most max_entries and about max_bytes (always at least one)."""
        if lo < self.first_index():
            raise LogError(f"entry {lo} is compacted (first index {self.first_index()})")
        hi = min(hi, self.last_index() + 1, lo + max_entries)
        start = lo - self.snap_index - 1
        out: list[Entry] = []
        size = 0
        for e in self.entries[start : hi - self.snap_index - 1]:
            size += e.size()
            if out and size > max_bytes:
                break
            out.append(e)
        return out

    def find_conflict_by_term(self, index: int, term: int) -> tuple[int, int]:
        """The largest (index, term) with index <= `index` and term <= `term` in our log;
        lets a leader skip a whole conflicting term per round trip (fast backtracking)."""
        index = min(index, self.last_index())
        while index > self.snap_index:
            t = self.term(index)
            if t is not None and t <= term:
                return index, t
            index -= 1
        return self.snap_index, self.snap_term

    def unstable_entries(self) -> list[Entry]:
        return self.entries[self.stable - self.snap_index :]

    def next_committed(self) -> list[Entry]:
        lo, hi = self.applying + 1, self.committed
        if hi < lo:
            return []
        return self.entries[lo - self.snap_index - 1 : hi - self.snap_index]

    # --- mutations --------------------------------------------------------------------------

    def append(self, entries: list[Entry]) -> None:
        if not entries:
            return
        first = entries[0].index
        if first <= self.committed:
            raise LogError(f"refusing to overwrite committed entry {first} (commit {self.committed})")
        if first > self.last_index() + 1:
            raise LogError(f"gap: appending {first} after last index {self.last_index()}")
        del self.entries[first - self.snap_index - 1 :]
        self.entries.extend(entries)
        self.stable = min(self.stable, first - 1)

    def maybe_append(self, prev_index: int, prev_term: int, commit: int, entries: tuple[Entry, ...]) -> int | None:
        """Follower side of AppendEntries; returns the last index known to match the leader,
        or None when (prev_index, prev_term) does not match our log."""
        if not self.match_term(prev_index, prev_term):
            return None
        last_new = prev_index + len(entries)
        for i, e in enumerate(entries):
            if e.index <= self.snap_index:
                continue  # already covered by our snapshot
            if self.term(e.index) != e.term:
                self.append(list(entries[i:]))
                break
        self.commit_to(min(commit, last_new))
        return last_new

    def commit_to(self, index: int) -> bool:
        if index > self.committed:
            if index > self.last_index():
                raise LogError(f"commit {index} is past the last index {self.last_index()}")
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        if index > self.stable and self.term(index) == term:
            self.stable = index

    def applied_to(self, index: int) -> None:
        if index > self.committed or index < self.applied:
            raise LogError(f"applied index {index} outside [{self.applied}, {self.committed}]")
        self.applied = index
        self.applying = max(self.applying, index)

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the log by a snapshot received from the leader."""
        self.snapshot = snapshot
        self.snap_index, self.snap_term = snapshot.meta.index, snapshot.meta.term
        self.entries = []
        self.committed = self.stable = snapshot.meta.index
        self.applied = self.applying = snapshot.meta.index
        self.pending_snapshot = snapshot

    def compact(self, snapshot: Snapshot, keep: int) -> None:
        """Adopt a snapshot the caller took of the applied state; drop entries up to
        index - keep (a few are kept so slightly lagging followers avoid a snapshot)."""
        index = snapshot.meta.index
        if index > self.applied:
            raise LogError(f"snapshot at {index} is past the applied index {self.applied}")
        if index <= self.snapshot.meta.index:
            return
        if self.term(index) != snapshot.meta.term:
            raise LogError(f"snapshot term {snapshot.meta.term} does not match entry {index}")
        self.snapshot = snapshot
        cut = max(index - keep, self.snap_index)
        if cut > self.snap_index:
            cut_term = self.term(cut)
            assert cut_term is not None
            del self.entries[: cut - self.snap_index]
            self.snap_index, self.snap_term = cut, cut_term
