"""RaftCore: the consensus state machine. Events in (tick, step, propose, read_index,
transfer_leadership, compact), a Ready out, advance() once the caller has done it.

Pure by design: no clock (time is counted in ticks), no I/O, no threads; randomness comes
from a seeded generator so a simulation replays exactly. Follows the Raft paper and thesis
(Ongaro 2014) with pre-vote (§9.6), check-quorum (§6.2), single-server membership changes
(§4.1, applied on commit, one at a time, each new leader first commits a no-op), learners,
leadership transfer (§3.10) and ReadIndex (§6.4).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from controlplane.raft import quorum
from controlplane.raft.codec import decode_conf_change, encode_conf_change
from controlplane.raft.log import RaftLog
from controlplane.raft.messages import (
    NO_NODE,
    AppendEntries,
    AppendEntriesResponse,
    ConfChange,
    ConfChangeOp,
    ConfState,
    Entry,
    EntryKind,
    HardState,
    Heartbeat,
    HeartbeatResponse,
    InstallSnapshot,
    InstallSnapshotResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    ReadState,
    Ready,
    RequestVote,
    RequestVoteResponse,
    Role,
    Snapshot,
    SnapshotMeta,
    TimeoutNow,
)
from controlplane.raft.progress import Progress, ProgressState


class RaftError(Exception):
    """Base of the errors the core raises to its caller."""


class NotLeaderError(RaftError):
    def __init__(self, leader_hint: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint or 'unknown'})")
        self.leader_hint = leader_hint


class ProposalRejected(RaftError):
    """The leader cannot take this proposal now (transfer under way, change pending...)."""


@dataclass(frozen=True, slots=True)
class RaftConfig:
    node_id: int
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    max_entries_per_msg: int = 512
    max_bytes_per_msg: int = 1 << 20
    max_inflight_msgs: int = 64
    snapshot_chunk_bytes: int = 1 << 20
    # Entries kept behind a snapshot so slightly lagging followers avoid a snapshot transfer.
    compaction_keep: int = 128
    pre_vote: bool = True
    check_quorum: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.node_id <= 0:
            raise ValueError(f"node_id must be a positive integer, got {self.node_id}")
        if self.heartbeat_ticks <= 0:
            raise ValueError(f"heartbeat_ticks must be positive, got {self.heartbeat_ticks}")
        if self.election_ticks <= self.heartbeat_ticks:
            raise ValueError(
                f"election_ticks ({self.election_ticks}) must exceed heartbeat_ticks ({self.heartbeat_ticks})"
            )
        for name in ("max_entries_per_msg", "max_bytes_per_msg", "max_inflight_msgs", "snapshot_chunk_bytes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.compaction_keep < 0:
            raise ValueError(f"compaction_keep must be >= 0, got {self.compaction_keep}")


@dataclass(frozen=True, slots=True)
class Proposal:
    """Where a proposal landed; it succeeded iff the entry applied at `index` has `term`."""

    term: int
    index: int


@dataclass(frozen=True, slots=True)
class Status:
    node_id: int
    role: Role
    term: int
    leader_id: int
    commit: int
    applied: int
    last_index: int
    conf: ConfState
    match: dict[int, int]  # leader only: follower -> match index


@dataclass(slots=True)
class _PendingRead:
    seq: int
    requester: int
    context: bytes
    index: int


def initial_entries(voters: list[int]) -> list[Entry]:
    """The log every founding member starts with: one committed ADD_VOTER per voter at term 1,
    so members that join later learn the founding configuration by replication."""
    return [
        Entry(1, i, encode_conf_change(ConfChange(ConfChangeOp.ADD_VOTER, v)), EntryKind.CONF_CHANGE)
        for i, v in enumerate(sorted(voters), start=1)
    ]


INITIAL_HARD_STATE = HardState()
# A commit of at least this many entries, or of this many bytes, is told to followers at
# once (_commit_worth_telling).
EAGER_COMMIT_ENTRIES = 2
EAGER_COMMIT_BYTES = 4096
EMPTY_SNAPSHOT = Snapshot(SnapshotMeta(0, 0, ConfState(frozenset())), b"")


class RaftCore:
    def __init__(
        self,
        config: RaftConfig,
        *,
        hard_state: HardState = INITIAL_HARD_STATE,
        snapshot: Snapshot = EMPTY_SNAPSHOT,
        entries: list[Entry] | tuple[Entry, ...] = (),
    ) -> None:
        self.cfg = config
        self.id = config.node_id
        self._rng = random.Random(config.seed * 1_000_003 + config.node_id)
        self.log = RaftLog(snapshot, list(entries), hard_state.commit)
        self.term = hard_state.term
        self.vote = hard_state.vote
        if self.log.last_term() > self.term:
            # The log reached the disk but the hard state after it did not: no message of
            # the newer term was sent, so no vote in it was either.
            self.term, self.vote = self.log.last_term(), NO_NODE
        self.conf = snapshot.meta.conf
        self._conf_index = snapshot.meta.index
        for e in self.log.entries:
            if e.index > self.log.committed:
                break
            if e.kind is EntryKind.CONF_CHANGE:
                self.conf = self.conf.apply(decode_conf_change(e.data))
                self._conf_index = e.index
        self.role = Role.FOLLOWER
        self.leader_id = NO_NODE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = config.election_ticks
        self.votes: dict[int, bool] = {}
        self.progress: dict[int, Progress] = {}
        self.pending_conf_index = 0
        self.transfer_target = NO_NODE
        self._msgs: list[Message] = []
        self._read_states: list[ReadState] = []
        self._pending_reads: list[_PendingRead] = []
        self._reads_awaiting_commit: list[tuple[int, bytes]] = []
        self._read_seq = 0
        self._incoming_snapshot: tuple[SnapshotMeta, bytearray] | None = None
        self._needs_broadcast = False
        self._needs_read_heartbeat = False
        self._broadcast_commit = self.log.committed
        self._prev_hard_state = HardState(self.term, self.vote, self.log.committed)
        self._prev_role = self.role
        self._reset_timers()

    # --- inspection -------------------------------------------------------------------------

    @property
    def promotable(self) -> bool:
        return self.id in self.conf.voters

    def status(self) -> Status:
        match = {nid: pr.match for nid, pr in self.progress.items()} if self.role is Role.LEADER else {}
        return Status(
            self.id,
            self.role,
            self.term,
            self.leader_id,
            self.log.committed,
            self.log.applied,
            self.log.last_index(),
            self.conf,
            match,
        )

    def hard_state(self) -> HardState:
        return HardState(self.term, self.vote, self.log.committed)

    # --- events -----------------------------------------------------------------------------

    def tick(self) -> None:
        if self.role is Role.LEADER:
            self._tick_leader()
            return
        self.election_elapsed += 1
        if self.promotable and self.election_elapsed >= self.randomized_timeout:
            self.election_elapsed = 0
            self.campaign()

    def campaign(self, *, transfer: bool = False) -> None:
        """Start an election now (a pre-vote first, unless this is a leadership transfer)."""
        if self.role is Role.LEADER or not self.promotable or self._has_unapplied_conf_change():
            return
        if self.cfg.pre_vote and not transfer:
            self._become_pre_candidate()
        else:
            self._become_candidate(transfer)

    def propose(self, data: bytes) -> Proposal:
        return self.propose_many([data])[0]

    def propose_many(self, items: list[bytes]) -> list[Proposal]:
        self._check_can_propose()
        return self._append_local([(d, EntryKind.NORMAL) for d in items])

    def propose_conf_change(self, change: ConfChange) -> Proposal:
        self._check_can_propose()
        if self.pending_conf_index > self.log.applied:
            raise ProposalRejected("a configuration change is still pending")
        after = self.conf.apply(change)
        if not after.voters:
            raise ProposalRejected("refusing to remove the last voter")
        if change.op is ConfChangeOp.ADD_LEARNER and change.node_id in self.conf.voters:
            raise ProposalRejected(f"node {change.node_id} is a voter; remove it before re-adding as a learner")
        proposal = self._append_local([(encode_conf_change(change), EntryKind.CONF_CHANGE)])[0]
        self.pending_conf_index = proposal.index
        return proposal

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; answered by a ReadState carrying `context`."""
        if self.role is Role.LEADER:
            self._handle_read_request(self.id, context)
        elif self.leader_id != NO_NODE:
            self._send(ReadIndexRequest(self.id, self.leader_id, self.term, context))
        else:
            raise NotLeaderError(NO_NODE)

    def transfer_leadership(self, target: int) -> None:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if target == self.id or target == self.transfer_target:
            return
        if target not in self.conf.voters:
            raise ProposalRejected(f"node {target} is not a voter")
        self.transfer_target = target
        self.election_elapsed = 0  # the transfer is abandoned after one election timeout
        pr = self.progress[target]
        if pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._send_append(target, pr)

    def compact(self, snapshot: Snapshot) -> None:
        """Adopt a snapshot the caller took of its applied state and drop the log before it."""
        self.log.compact(snapshot, self.cfg.compaction_keep)

    def step(self, m: Message) -> None:
        if m.dst != self.id:
            return
        if m.term > self.term:
            if isinstance(m, RequestVote):
                in_lease = (
                    self.cfg.check_quorum
                    and self.leader_id != NO_NODE
                    and self.election_elapsed < self.cfg.election_ticks
                )
                if in_lease and not m.transfer:
                    # We heard from a live leader recently: do not disrupt it. Say no (at our
                    # lower term, which the candidate ignores) rather than stay silent, so a
                    # caller waiting for an answer gets one.
                    self._send(RequestVoteResponse(self.id, m.src, self.term, False, m.pre_vote))
                    return
            if isinstance(m, RequestVote) and m.pre_vote:
                pass  # a pre-vote never changes our term
            elif isinstance(m, RequestVoteResponse) and m.pre_vote and m.granted:
                pass  # granted pre-votes carry the term we would campaign at
            elif isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
                self._become_follower(m.term, m.src)
            else:
                self._become_follower(m.term, NO_NODE)
        elif m.term < self.term:
            if isinstance(m, (AppendEntries, Heartbeat)):
                # Tell the stale leader about our term so it steps down.
                self._send(AppendEntriesResponse(self.id, m.src, self.term, False, 0))
            elif isinstance(m, RequestVote):
                # A stale candidate learns our term from the refusal (Raft §5.1) and steps down.
                self._send(RequestVoteResponse(self.id, m.src, self.term, False, pre_vote=m.pre_vote))
            return

        if isinstance(m, RequestVote):
            self._handle_vote_request(m)
        elif self.role is Role.LEADER:
            self._step_leader(m)
        elif self.role is Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    # --- Ready ------------------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._msgs
            or self._read_states
            or self._needs_broadcast
            or self._needs_read_heartbeat
            or self.log.pending_snapshot is not None
            or self.log.stable < self.log.last_index()
            or self.log.applying < self.log.committed
            or self.hard_state() != self._prev_hard_state
            or self.role is not self._prev_role
            or (self.role is Role.LEADER and self._commit_worth_telling())
        )

    def _commit_worth_telling(self) -> bool:
        """A commit of one entry rides on the next append or heartbeat (at most a tick later;
        Raft §5.3): telling each follower at once cost a lone writer one more message and
        answer per follower per write, on the path before the client's reply. A commit of a
        batch, or of one large entry (a telemetry segment), is told at once: followers apply
        it while the leader answers, not a tick later, and one more message is little beside
        the work of applying it."""
        untold = self.log.committed - self._broadcast_commit
        if untold >= EAGER_COMMIT_ENTRIES:
            return True
        return untold == 1 and self.log.data_size(self.log.committed) >= EAGER_COMMIT_BYTES

    def ready(self) -> Ready:
        if self.role is Role.LEADER and (self._needs_broadcast or self._commit_worth_telling()):
            self._broadcast_append()
        if self.role is Role.LEADER and self._needs_read_heartbeat:
            self._broadcast_heartbeat()
        self._needs_broadcast = False
        self._needs_read_heartbeat = False
        hs = self.hard_state()
        committed = tuple(self.log.next_committed())
        if committed:
            self.log.applying = committed[-1].index
        unstable = tuple(self.log.unstable_entries())
        vote_changed = (hs.term, hs.vote) != (self._prev_hard_state.term, self._prev_hard_state.vote)
        rd = Ready(
            hard_state=hs if hs != self._prev_hard_state else None,
            entries=unstable,
            snapshot=self.log.pending_snapshot,
            messages=tuple(self._msgs),
            committed_entries=committed,
            read_states=tuple(self._read_states),
            leader_id=self.leader_id,
            role=self.role,
            term=self.term,
            vote_changed=vote_changed,
            # A vote must be durable before it is told, and so must an entry before a
            # commit index covering it is (a lone voter commits its entries at once).
            send_before_persist=self.role is Role.LEADER
            and not vote_changed
            and self.log.pending_snapshot is None
            and (not unstable or hs.commit < unstable[0].index),
        )
        self._msgs = []
        self._read_states = []
        self._prev_hard_state = hs
        self._prev_role = self.role
        return rd

    def advance(self, rd: Ready) -> None:
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.snapshot is not None and self.log.pending_snapshot is rd.snapshot:
            self.log.pending_snapshot = None
        if rd.committed_entries:
            last_index = rd.committed_entries[-1].index
            if last_index > self.log.applied:
                for e in rd.committed_entries:
                    if e.kind is EntryKind.CONF_CHANGE and e.index > self._conf_index:
                        self._apply_conf_change(e.index, decode_conf_change(e.data))
                self.log.applied_to(last_index)

    # --- roles ------------------------------------------------------------------------------

    def _reset_timers(self) -> None:
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        n = self.cfg.election_ticks
        self.randomized_timeout = n + self._rng.randrange(n)

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.leader_id = NO_NODE
        self._reset_timers()
        self.votes = {}
        self.transfer_target = NO_NODE
        self._pending_reads = []
        self._reads_awaiting_commit = []
        self.progress = {}

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader_id = leader

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote change: a failed pre-vote leaves no trace.
        self.votes = {}
        self.leader_id = NO_NODE
        self.role = Role.PRE_CANDIDATE
        self._request_votes(self.term + 1, pre_vote=True, transfer=False)

    def _become_candidate(self, transfer: bool) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE
        self._request_votes(self.term, pre_vote=False, transfer=transfer)

    def _request_votes(self, term: int, *, pre_vote: bool, transfer: bool) -> None:
        self.votes[self.id] = True
        if self._tally() is quorum.VoteResult.WON:
            self._won_vote()
            return
        for voter in sorted(self.conf.voters):
            if voter != self.id:
                self._send(
                    RequestVote(self.id, voter, term, self.log.last_index(), self.log.last_term(), pre_vote, transfer)
                )

    def _tally(self) -> quorum.VoteResult:
        return quorum.vote_result(self.conf.voters, self.votes)

    def _won_vote(self) -> None:
        if self.role is Role.PRE_CANDIDATE:
            self._become_candidate(transfer=False)
        else:
            self._become_leader()

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader_id = self.id
        last = self.log.last_index()
        self.progress = {nid: Progress(last + 1) for nid in self.conf.members}
        if self.id in self.progress:
            self.progress[self.id].match = last
        # No configuration change until this term's no-op commits (fixes the single-server
        # change bug Ongaro described on raft-dev, 2015).
        self.pending_conf_index = self._append_local([(b"", EntryKind.NORMAL)])[0].index

    # --- leader -----------------------------------------------------------------------------

    def _check_can_propose(self) -> None:
        if self.role is not Role.LEADER:
            raise NotLeaderError(self.leader_id)
        if self.transfer_target != NO_NODE:
            raise ProposalRejected(f"leadership is being transferred to {self.transfer_target}")

    def _append_local(self, items: list[tuple[bytes, EntryKind]]) -> list[Proposal]:
        first = self.log.last_index() + 1
        entries = [Entry(self.term, first + i, data, kind) for i, (data, kind) in enumerate(items)]
        self.log.append(entries)
        me = self.progress.get(self.id)
        if me is not None:
            me.maybe_update(self.log.last_index())
        self._maybe_commit()
        self._needs_broadcast = True
        return [Proposal(self.term, e.index) for e in entries]

    def _maybe_commit(self) -> bool:
        match = {nid: pr.match for nid, pr in self.progress.items()}
        index = quorum.committed_index(self.conf.voters, match)
        # Raft §5.4.2: only entries of the current term commit by counting replicas.
        if index > self.log.committed and self.log.term(index) == self.term:
            self.log.commit_to(index)
            if self._reads_awaiting_commit:
                waiting, self._reads_awaiting_commit = self._reads_awaiting_commit, []
                for requester, ctx in waiting:
                    self._handle_read_request(requester, ctx)
            return True
        return False

    def _broadcast_append(self) -> None:
        for nid, pr in self.progress.items():
            if nid != self.id:
                self._send_append(nid, pr, allow_empty=True)
        self._broadcast_commit = self.log.committed

    def _broadcast_heartbeat(self) -> None:
        for nid, pr in self.progress.items():
            if nid != self.id:
                commit = min(pr.match, self.log.committed)
                self._send(Heartbeat(self.id, nid, self.term, commit, self._read_seq))

    def _send_append(self, to: int, pr: Progress, allow_empty: bool = False) -> None:
        sent_any = False
        while not pr.is_paused(self.cfg.max_inflight_msgs):
            last = self.log.last_index()
            if pr.next < self.log.first_index():
                self._send_snapshot(to, pr)
                return
            prev = pr.next - 1
            prev_term = self.log.term(prev)
            if prev_term is None:
                self._send_snapshot(to, pr)
                return
            entries = self.log.slice(pr.next, last + 1, self.cfg.max_entries_per_msg, self.cfg.max_bytes_per_msg)
            if not entries and (sent_any or not allow_empty):
                return
            self._send(AppendEntries(self.id, to, self.term, prev, prev_term, tuple(entries), self.log.committed))
            sent_any = True
            if pr.state is ProgressState.REPLICATE:
                if not entries:
                    return
                pr.next = entries[-1].index + 1
                pr.inflight.append(entries[-1].index)
            else:
                pr.probe_sent = True

    def _send_snapshot(self, to: int, pr: Progress) -> None:
        if pr.state is not ProgressState.SNAPSHOT or pr.snapshot is None:
            pr.become_snapshot(self.log.snapshot)
        self._send_snapshot_chunk(to, pr)

    def _send_snapshot_chunk(self, to: int, pr: Progress) -> None:
        snap = pr.snapshot
        if snap is None:  # not sending one (a stale chunk answer): nothing to resend
            return
        offset = pr.snapshot_offset
        chunk = snap.data[offset : offset + self.cfg.snapshot_chunk_bytes]
        done = offset + len(chunk) >= len(snap.data)
        pr.snapshot_idle_ticks = 0
        self._send(InstallSnapshot(self.id, to, self.term, snap.meta, offset, chunk, done))

    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_ticks:
            self.election_elapsed = 0
            if self.cfg.check_quorum:
                active = {self.id} | {nid for nid, pr in self.progress.items() if pr.recent_active}
                if not quorum.has_quorum(self.conf.voters, active):
                    self._become_follower(self.term, NO_NODE)
                    return
                for nid, pr in self.progress.items():
                    pr.recent_active = nid == self.id
            self.transfer_target = NO_NODE
        resend_after = max(2, self.cfg.election_ticks // 2)
        for nid, pr in self.progress.items():
            if pr.state is ProgressState.SNAPSHOT:
                pr.snapshot_idle_ticks += 1
                if pr.snapshot_idle_ticks >= resend_after:
                    self._send_snapshot_chunk(nid, pr)
        if self.heartbeat_elapsed >= self.cfg.heartbeat_ticks:
            self.heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _step_leader(self, m: Message) -> None:
        pr = self.progress.get(m.src)
        if isinstance(m, ReadIndexRequest):
            self._handle_read_request(m.src, m.context)
            return
        if pr is None:
            return
        if isinstance(m, AppendEntriesResponse):
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif isinstance(m, HeartbeatResponse):
            pr.recent_active = True
            pr.probe_sent = False
            if pr.state is ProgressState.REPLICATE and pr.is_paused(self.cfg.max_inflight_msgs):
                pr.inflight.popleft()  # lost appends must not hold the window shut forever
            if pr.match < self.log.last_index():
                self._send_append(m.src, pr, allow_empty=True)
            if m.read_seq > pr.read_ack:
                pr.read_ack = m.read_seq
                self._release_confirmed_reads()
        elif isinstance(m, InstallSnapshotResponse):
            pr.recent_active = True
            self._handle_snapshot_response(m, pr)

    def _handle_append_response(self, m: AppendEntriesResponse, pr: Progress) -> None:
        if not m.success:
            hint = m.hint_index
            if m.hint_term > 0:
                hint, _ = self.log.find_conflict_by_term(m.hint_index, m.hint_term)
            if pr.maybe_decrease_to(m.index, hint):
                if pr.state is ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.src, pr)
            return
        if not pr.maybe_update(m.index):
            if pr.state is ProgressState.REPLICATE:
                pr.free_up_to(m.index)
            return
        if pr.state is ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state is ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
            pr.become_probe()
            pr.become_replicate()
        else:
            pr.free_up_to(m.index)
        self._maybe_commit()
        self._send_append(m.src, pr)
        if m.src == self.transfer_target and pr.match == self.log.last_index():
            self._send(TimeoutNow(self.id, m.src, self.term))

    def _handle_snapshot_response(self, m: InstallSnapshotResponse, pr: Progress) -> None:
        if m.done:
            pr.maybe_update(m.snapshot_index)
            if pr.state is ProgressState.SNAPSHOT:
                pr.become_probe()
            self._send_append(m.src, pr)
            return
        if pr.state is not ProgressState.SNAPSHOT or m.snapshot_index != pr.pending_snapshot:
            return
        if m.next_offset != pr.snapshot_offset or m.next_offset == 0:
            pr.snapshot_offset = m.next_offset
            self._send_snapshot_chunk(m.src, pr)

    def _handle_read_request(self, requester: int, context: bytes) -> None:
        if self.log.term(self.log.committed) != self.term:
            # Our commit index is only known to be current once this term's no-op commits.
            self._reads_awaiting_commit.append((requester, context))
            return
        self._read_seq += 1
        self._pending_reads.append(_PendingRead(self._read_seq, requester, context, self.log.committed))
        me = self.progress.get(self.id)
        if me is not None:
            me.read_ack = self._read_seq
        if not self._release_confirmed_reads():
            self._needs_read_heartbeat = True  # one heartbeat round serves every read in the batch

    def _release_confirmed_reads(self) -> bool:
        acks = {nid: pr.read_ack for nid, pr in self.progress.items()}
        confirmed = quorum.committed_index(self.conf.voters, acks)
        released = False
        while self._pending_reads and self._pending_reads[0].seq <= confirmed:
            read = self._pending_reads.pop(0)
            released = True
            if read.requester == self.id:
                self._read_states.append(ReadState(read.context, read.index))
            else:
                self._send(ReadIndexResponse(self.id, read.requester, self.term, read.context, read.index))
        return released

    def _apply_conf_change(self, index: int, change: ConfChange) -> None:
        self.conf = self.conf.apply(change)
        self._conf_index = index
        if self.role is not Role.LEADER:
            return
        if change.op is ConfChangeOp.REMOVE:
            self.progress.pop(change.node_id, None)
            if change.node_id == self.id:
                self._broadcast_append()  # no heartbeat of ours will carry this commit
                self._become_follower(self.term, NO_NODE)
                return
            if change.node_id == self.transfer_target:
                self.transfer_target = NO_NODE
            self._maybe_commit()
            self._release_confirmed_reads()
        elif change.node_id not in self.progress:
            self.progress[change.node_id] = Progress(self.log.last_index() + 1)

    # --- followers and candidates -----------------------------------------------------------

    def _handle_vote_request(self, m: RequestVote) -> None:
        can_vote = (
            self.vote == m.src
            or (self.vote == NO_NODE and self.leader_id == NO_NODE)
            or (m.pre_vote and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.last_log_index, m.last_log_term):
            self._send(RequestVoteResponse(self.id, m.src, m.term, True, m.pre_vote))
            if not m.pre_vote:
                self.election_elapsed = 0
                self.vote = m.src
        else:
            self._send(RequestVoteResponse(self.id, m.src, self.term, False, m.pre_vote))

    def _step_candidate(self, m: Message) -> None:
        if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
            self._become_follower(self.term, m.src)
            self._step_follower(m)
        elif isinstance(m, RequestVoteResponse):
            if m.pre_vote != (self.role is Role.PRE_CANDIDATE):
                return
            self.votes.setdefault(m.src, m.granted)
            result = self._tally()
            if result is quorum.VoteResult.WON:
                self._won_vote()
            elif result is quorum.VoteResult.LOST:
                self._become_follower(self.term, NO_NODE)
        elif isinstance(m, ReadIndexRequest):
            self._send(ReadIndexResponse(self.id, m.src, self.term, m.context, 0, ok=False))

    def _step_follower(self, m: Message) -> None:
        if isinstance(m, (AppendEntries, Heartbeat, InstallSnapshot)):
            self.election_elapsed = 0
            self.leader_id = m.src
        if isinstance(m, AppendEntries):
            self._handle_append(m)
        elif isinstance(m, Heartbeat):
            self.log.commit_to(min(m.commit, self.log.last_index()))
            self._send(HeartbeatResponse(self.id, m.src, self.term, m.read_seq))
        elif isinstance(m, InstallSnapshot):
            self._handle_snapshot_chunk(m)
        elif isinstance(m, TimeoutNow):
            self.campaign(transfer=True)
        elif isinstance(m, ReadIndexResponse):
            if m.ok:
                self._read_states.append(ReadState(m.context, m.index))
        elif isinstance(m, ReadIndexRequest):
            self._send(ReadIndexResponse(self.id, m.src, self.term, m.context, 0, ok=False))

    def _handle_append(self, m: AppendEntries) -> None:
        if m.prev_log_index < self.log.committed:
            self._send(AppendEntriesResponse(self.id, m.src, self.term, True, self.log.committed))
            return
        last = self.log.maybe_append(m.prev_log_index, m.prev_log_term, m.commit, m.entries)
        if last is not None:
            self._send(AppendEntriesResponse(self.id, m.src, self.term, True, last))
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.prev_log_index, self.log.last_index()), m.prev_log_term
        )
        self._send(AppendEntriesResponse(self.id, m.src, self.term, False, m.prev_log_index, hint_index, hint_term))

    def _handle_snapshot_chunk(self, m: InstallSnapshot) -> None:
        meta = m.meta

        def reply(next_offset: int, done: bool) -> None:
            self._send(InstallSnapshotResponse(self.id, m.src, self.term, meta.index, next_offset, done))

        if meta.index <= self.log.committed:
            self._incoming_snapshot = None
            reply(0, True)
            return
        if m.offset == 0:
            self._incoming_snapshot = (meta, bytearray())
        incoming = self._incoming_snapshot
        if incoming is None or incoming[0] != meta or len(incoming[1]) != m.offset:
            reply(len(incoming[1]) if incoming is not None and incoming[0] == meta else 0, False)
            return
        incoming[1].extend(m.chunk)
        if not m.done:
            reply(len(incoming[1]), False)
            return
        self._incoming_snapshot = None
        if self.log.match_term(meta.index, meta.term):
            self.log.commit_to(meta.index)  # we already hold that prefix: just fast-forward
        else:
            self.log.restore(Snapshot(meta, bytes(incoming[1])))
            self.conf = meta.conf
            self._conf_index = meta.index
        reply(len(incoming[1]), True)

    def _has_unapplied_conf_change(self) -> bool:
        lo = max(self.log.applied, self._conf_index) + 1
        first = self.log.snap_index + 1
        return any(
            e.kind is EntryKind.CONF_CHANGE
            for e in self.log.entries[max(0, lo - first) : self.log.committed - first + 1]
        )

    def _send(self, m: Message) -> None:
        self._msgs.append(m)
