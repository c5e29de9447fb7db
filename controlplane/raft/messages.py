"""Raft's data types and wire messages: frozen dataclasses, one codec for all.

Node ids are positive ints; 0 means "none" (no vote, no known leader).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

NO_NODE = 0


class Role(enum.Enum):
    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryKind(enum.IntEnum):
    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    term: int
    index: int
    data: bytes = b""
    kind: EntryKind = EntryKind.NORMAL

    def size(self) -> int:
        return len(self.data) + 24


class ConfChangeOp(enum.IntEnum):
    ADD_VOTER = 0  # also promotes a learner
    ADD_LEARNER = 1
    REMOVE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    op: ConfChangeOp
    node_id: int


@dataclass(frozen=True, slots=True)
class ConfState:
    voters: frozenset[int]
    learners: frozenset[int] = frozenset()

    def __post_init__(self) -> None:
        if self.voters & self.learners:
            raise ValueError(f"nodes {sorted(self.voters & self.learners)} are both voter and learner")
        if any(n <= 0 for n in self.voters | self.learners):
            raise ValueError("node ids must be positive integers")

    @property
    def members(self) -> frozenset[int]:
        return self.voters | self.learners

    def apply(self, change: ConfChange) -> ConfState:
        voters, learners = set(self.voters), set(self.learners)
        if change.op is ConfChangeOp.ADD_VOTER:
            learners.discard(change.node_id)
            voters.add(change.node_id)
        elif change.op is ConfChangeOp.ADD_LEARNER:
            if change.node_id in voters:
                return self  # demotion is not a single-server change we allow
            learners.add(change.node_id)
        else:
            voters.discard(change.node_id)
            learners.discard(change.node_id)
        return ConfState(frozenset(voters), frozenset(learners))


@dataclass(frozen=True, slots=True)
class HardState:
    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    index: int
    term: int
    conf: ConfState


@dataclass(frozen=True, slots=True)
class Snapshot:
    meta: SnapshotMeta
    data: bytes


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RequestVote:
    src: int
    dst: int
    term: int
    last_log_index: int
    last_log_term: int
    pre_vote: bool = False
    # Set by a leadership transfer: voters skip their leader-lease check.
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class RequestVoteResponse:
    src: int
    dst: int
    term: int
    granted: bool
    pre_vote: bool = False


@dataclass(frozen=True, slots=True)
class AppendEntries:
    src: int
    dst: int
    term: int
    prev_log_index: int
    prev_log_term: int
    entries: tuple[Entry, ...]
    commit: int


@dataclass(frozen=True, slots=True)
class AppendEntriesResponse:
    src: int
    dst: int
    term: int
    success: bool
    # On success: the follower's last index matching the leader. On reject: the
    # rejected prev_log_index, plus a hint (index, term) for fast backtracking.
    index: int
    hint_index: int = 0
    hint_term: int = 0


@dataclass(frozen=True, slots=True)
class Heartbeat:
    src: int
    dst: int
    term: int
    commit: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class HeartbeatResponse:
    src: int
    dst: int
    term: int
    read_seq: int = 0


@dataclass(frozen=True, slots=True)
class InstallSnapshot:
    src: int
    dst: int
    term: int
    meta: SnapshotMeta
    offset: int
    chunk: bytes
    done: bool


@dataclass(frozen=True, slots=True)
class InstallSnapshotResponse:
    src: int
    dst: int
    term: int
    snapshot_index: int
    # Bytes received so far; equal to the total once installed.
    next_offset: int
    done: bool


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    src: int
    dst: int
    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower forwarding a linearizable read to the leader."""

    src: int
    dst: int
    term: int
    context: bytes


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    src: int
    dst: int
    term: int
    context: bytes
    index: int
    ok: bool = True


Message = (
    RequestVote
    | RequestVoteResponse
    | AppendEntries
    | AppendEntriesResponse
    | Heartbeat
    | HeartbeatResponse
    | InstallSnapshot
    | InstallSnapshotResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)

MESSAGE_TYPES: tuple[type, ...] = (
    RequestVote,
    RequestVoteResponse,
    AppendEntries,
    AppendEntriesResponse,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once the state machine has applied `index`."""

    context: bytes
    index: int


@dataclass(frozen=True, slots=True)
class Ready:
    """What the caller must do, in this order: persist `hard_state`, `snapshot` and
    `entries` (truncating any stored entries at or after entries[0].index), durably when
    must_sync(); then send `messages`, then apply `snapshot` and `committed_entries`, then
    `advance(ready)`. A hard state that only moves the commit index need not be fsynced on
    its own (etcd-raft's MustSync): it must reach the disk no later than the entries written
    after it, which a log that keeps it in order with the entries gives for free.

    When `send_before_persist`, the messages may go out before the entries are written
    (Raft thesis 10.2.1): a leader's own write is one vote of the quorum like a follower's,
    and none of these messages says an entry of this Ready is committed."""

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: Snapshot | None
    messages: tuple[Message, ...]
    committed_entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]
    leader_id: int
    role: Role
    term: int

    vote_changed: bool = False  # term or vote differ from the previous Ready's
    send_before_persist: bool = False

    def must_sync(self) -> bool:
        return bool(self.entries) or self.vote_changed or self.snapshot is not None

    def has_state(self) -> bool:
        """Something to write at all (perhaps without an fsync)."""
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None
