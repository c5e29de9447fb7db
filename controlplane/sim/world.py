"""One simulated schedule: Raft replicas on simulated disks and a lossy network, clients,
and a fault plan, all drawn from a single seed. Time is integer microseconds."""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from controlplane.raft.core import NotLeaderError, ProposalRejected, RaftConfig, RaftCore, initial_entries
from controlplane.raft.messages import (
    ConfChange,
    ConfChangeOp,
    EntryKind,
    HardState,
    Message,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from controlplane.sim.disk import SimDisk
from controlplane.sim.invariants import InvariantChecker, SafetyViolation
from controlplane.sim.kv import KVStore, encode_put
from controlplane.sim.linearizability import Operation, check_history

MS = 1000


@dataclass(frozen=True)
class SimOptions:
    replicas: int = 3
    duration_ms: int = 2500  # faults and client load
    settle_ms: int = 1200  # faults healed, clients finishing
    clients: int = 4
    keys: int = 3
    lossy_disk: bool = False
    faults: bool = True


@dataclass
class ScheduleStats:
    ops: int = 0
    ops_ok: int = 0
    ops_unknown: int = 0
    elections: int = 0
    crashes: int = 0
    torn_writes: int = 0
    lost_synced_writes: int = 0  # only with --lossy-disk
    partitions: int = 0
    conf_changes: int = 0
    transfers: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    messages: int = 0


@dataclass
class ScheduleResult:
    seed: int
    replicas: int
    violations: list[str]
    linearizable: bool
    stats: ScheduleStats
    converged: bool


@dataclass
class _ClientOp:
    op: Operation
    client: int
    attempt: int = 0
    done: bool = False


@dataclass
class _Link:
    loss: float
    dup: float
    slow: float


@dataclass(order=True)
class _Event:
    time: int
    seq: int
    action: Callable[..., None] = field(compare=False)
    args: tuple[Any, ...] = field(compare=False, default=())


class SimNode:
    """The shell around one RaftCore: persist, send, apply, advance; plus client requests."""

    def __init__(self, sim: Simulation, node_id: int, disk: SimDisk, tick_us: int) -> None:
        self.sim = sim
        self.id = node_id
        self.disk = disk
        self.tick_us = tick_us
        self.alive = False
        self.incarnation = 0
        self.crash_mid_write = False
        self.core: RaftCore
        self.kv = KVStore()
        self.pending_writes: dict[int, tuple[int, _ClientOp]] = {}
        self.pending_reads: dict[bytes, _ClientOp] = {}
        self.ready_reads: list[tuple[int, _ClientOp]] = []
        self.last_snapshot_index = 0
        self.leader_term = 0  # the term this node last led, to spot new leaderships

    def boot(self) -> None:
        hs, snap, entries = self.disk.load()
        if snap is not None and entries and entries[-1].index < snap.meta.index:
            self.disk.reset_log()  # every entry is covered by the snapshot; a lossy disk
            self.disk.sync()  # can leave such a stub, and appends must not leave a gap
            entries = []
        kwargs: dict[str, Any] = {} if snap is None else {"snapshot": snap}
        self.core = RaftCore(self.sim.raft_config(self.id), hard_state=hs, entries=entries, **kwargs)
        self.kv = KVStore.restore(snap.data) if snap is not None else KVStore()
        self.last_snapshot_index = snap.meta.index if snap is not None else 0
        self.pending_writes, self.pending_reads, self.ready_reads = {}, {}, []
        self.alive = True
        self.incarnation += 1
        self.sim.schedule(self.tick_us, self.sim.on_tick, self.id, self.incarnation)
        self.process()

    def crash(self) -> None:
        self.alive = False
        self.disk.crash()

    def process(self) -> None:
        checker = self.sim.checker
        for _round in itertools.count():
            if not (self.alive and self.core.has_ready()):
                return
            if _round > 1000:
                raise RuntimeError(f"node {self.id}: Ready never drains ({self.core.status()})")
            rd = self.core.ready()
            prev_term = self.core.log.term(rd.entries[0].index - 1) if rd.entries else None
            self._persist(rd)
            if self.crash_mid_write and rd.must_sync():
                self.crash_mid_write = False
                self.crash()
                return
            self.disk.sync()
            checker.on_persisted(self.id, rd.entries, prev_term)
            for m in rd.messages:
                self.sim.send(m)
            if rd.snapshot is not None:
                self.kv = KVStore.restore(rd.snapshot.data)
                self.last_snapshot_index = rd.snapshot.meta.index
                self.sim.stats.snapshots_installed += 1
            checker.on_applied(self.id, rd.committed_entries)
            for e in rd.committed_entries:
                if e.kind is EntryKind.NORMAL and e.data:
                    self.kv.apply(e.data)
                waiting = self.pending_writes.pop(e.index, None)
                if waiting is not None:
                    term, cop = waiting
                    # A different entry at our index means the proposal was overwritten.
                    self.sim.reply(cop, ok=term == e.term)
            for rs in rd.read_states:
                reader = self.pending_reads.pop(rs.context, None)
                if reader is not None:
                    self.ready_reads.append((rs.index, reader))
            self.core.advance(rd)
            if rd.role is Role.LEADER:
                if self.leader_term != rd.term:
                    self.leader_term = rd.term
                    self.sim.stats.elections += 1
                    checker.on_became_leader(self.id, self.core)
                checker.on_leader(self.id, rd.term)
            self._serve_reads()
            self._maybe_snapshot()

    def _persist(self, rd: Ready) -> None:
        # Same order as DiskStorage.persist: the log before the hard state whose commit
        # index refers to it.
        if rd.snapshot is not None:
            self.disk.write_snapshot(rd.snapshot)
            self.disk.reset_log()
        if rd.entries:
            self.disk.append(list(rd.entries))
        if rd.hard_state is not None:
            self.disk.write_hard_state(rd.hard_state)

    def _serve_reads(self) -> None:
        applied = self.core.log.applied
        still = []
        for index, cop in self.ready_reads:
            if index <= applied:
                cop.op.value = self.kv.get(cop.op.key)
                self.sim.reply(cop, ok=True)
            else:
                still.append((index, cop))
        self.ready_reads = still

    def _maybe_snapshot(self) -> None:
        applied = self.core.log.applied
        if applied - self.last_snapshot_index < self.sim.snapshot_every:
            return
        term = self.core.log.term(applied)
        assert term is not None
        snap = Snapshot(SnapshotMeta(applied, term, self.core.conf), self.kv.snapshot())
        self.disk.write_snapshot(snap)
        self.disk.sync()
        self.core.compact(snap)
        self.disk.compact(self.core.log.snap_index)
        self.disk.sync()
        self.last_snapshot_index = applied
        self.sim.stats.snapshots_taken += 1

    def handle_request(self, cop: _ClientOp) -> None:
        op = cop.op
        try:
            if op.kind == "write":
                assert op.value is not None
                proposal = self.core.propose(encode_put(op.key, op.value))
                self.pending_writes[proposal.index] = (proposal.term, cop)
            else:
                ctx = f"{op.client}:{op.call}:{cop.attempt}".encode()
                self.core.read_index(ctx)
                self.pending_reads[ctx] = cop
        except (NotLeaderError, ProposalRejected) as exc:
            hint = exc.leader_hint if isinstance(exc, NotLeaderError) else 0
            self.sim.redirect(cop, hint)
            return
        self.process()


class Simulation:
    def __init__(self, seed: int, options: SimOptions) -> None:
        self.seed = seed
        self.opts = options
        self.rng = random.Random(seed)
        self.now = 0
        self._queue: list[_Event] = []
        self._seq = itertools.count()
        self.checker = InvariantChecker()
        self.stats = ScheduleStats()
        self.history: list[Operation] = []
        rng = self.rng
        self.election_ticks = rng.choice([8, 10, 12])
        self.snapshot_every = rng.choice([15, 40, 100, 10**9])
        self.compaction_keep = rng.choice([0, 3, 20])
        self.chunk_bytes = rng.choice([16, 64, 1 << 20])
        self.max_entries = rng.choice([1, 4, 64])
        self.max_inflight = rng.choice([1, 4, 64])
        base_loss = rng.choice([0.0, 0.01, 0.05]) if options.faults else 0.0
        self.default_link = _Link(base_loss, rng.choice([0.0, 0.02]) if options.faults else 0.0, 0.05)
        self.cut: set[tuple[int, int]] = set()
        self.nodes: dict[int, SimNode] = {}
        self.removed: set[int] = set()
        self.next_node_id = options.replicas + 1
        founders = list(range(1, options.replicas + 1))
        for nid in founders:
            disk = SimDisk(random.Random(rng.random()), lossy=options.lossy_disk)
            disk.append(initial_entries(founders))
            disk.write_hard_state(HardState(1, 0, len(founders)))
            disk.sync()
            self._add_node(nid, disk)
        self.client_ops: dict[int, _ClientOp | None] = {}
        self.op_counter = itertools.count(1)
        self.membership_busy = False

    # --- plumbing ---------------------------------------------------------------------------

    def raft_config(self, node_id: int) -> RaftConfig:
        return RaftConfig(
            node_id=node_id,
            election_ticks=self.election_ticks,
            heartbeat_ticks=1,
            max_entries_per_msg=self.max_entries,
            max_inflight_msgs=self.max_inflight,
            snapshot_chunk_bytes=self.chunk_bytes,
            compaction_keep=self.compaction_keep,
            seed=self.seed,
        )

    def _add_node(self, nid: int, disk: SimDisk) -> SimNode:
        skew = self.rng.uniform(0.8, 1.25) if self.opts.faults else 1.0
        node = SimNode(self, nid, disk, int(10 * MS * skew))
        self.nodes[nid] = node
        node.boot()
        return node

    def schedule(self, delay_us: int, action: Callable[..., None], *args: Any) -> None:
        heapq.heappush(self._queue, _Event(self.now + max(0, delay_us), next(self._seq), action, args))

    def run(self) -> ScheduleResult:
        opts = self.opts
        end_faults = opts.duration_ms * MS
        end = end_faults + opts.settle_ms * MS
        for c in range(opts.clients):
            self.client_ops[c] = None
            self.schedule(self.rng.randrange(50 * MS), self.client_next, c)
        if opts.faults:
            t = 100 * MS
            while t < end_faults:
                self.schedule(t, self.inject_fault)
                t += self.rng.randrange(80 * MS, 400 * MS)
        self.schedule(end_faults, self.heal_all)
        violations: list[str] = []
        try:
            while self._queue and self._queue[0].time <= end:
                ev = heapq.heappop(self._queue)
                self.now = ev.time
                ev.action(*ev.args)
        except SafetyViolation as exc:
            violations.append(str(exc))
        except Exception as exc:  # a core assertion tripping is a finding, not a crash
            violations.append(f"{type(exc).__name__} at t={self.now / MS:.1f}ms: {exc}")
        for cop in self.client_ops.values():
            if cop is not None and not cop.done:
                self._finish(cop, unknown=True)
        linearizable = True
        if not violations:
            result = check_history(self.history)
            if not result.ok:
                linearizable = False
                violations.append(f"history not linearizable on key {result.failing_key}")
        self.stats.ops = len(self.history)
        self.stats.torn_writes = sum(node.disk.torn_writes for node in self.nodes.values())
        self.stats.lost_synced_writes = sum(node.disk.lost_synced_writes for node in self.nodes.values())
        return ScheduleResult(self.seed, opts.replicas, violations, linearizable, self.stats, self._converged())

    def _converged(self) -> bool:
        live = [n for n in self.nodes.values() if n.alive]
        return len({n.kv.snapshot() for n in live}) == 1 and len({n.core.log.applied for n in live}) == 1

    # --- network ----------------------------------------------------------------------------

    def send(self, m: Message) -> None:
        self.stats.messages += 1
        if (m.src, m.dst) in self.cut:
            return
        link = self.default_link
        rng = self.rng
        if link.loss and rng.random() < link.loss:
            return
        copies = 2 if link.dup and rng.random() < link.dup else 1
        for _ in range(copies):
            delay = rng.randrange(200, 3 * MS)
            if rng.random() < link.slow:
                delay += rng.randrange(5 * MS, 40 * MS)  # reordering
            self.schedule(delay, self._deliver, m)

    def _deliver(self, m: Message) -> None:
        node = self.nodes.get(m.dst)
        if node is None or not node.alive or (m.src, m.dst) in self.cut:
            return
        node.core.step(m)
        node.process()

    def on_tick(self, nid: int, incarnation: int) -> None:
        node = self.nodes.get(nid)
        if node is None or not node.alive or node.incarnation != incarnation:
            return
        node.core.tick()
        node.process()
        self.schedule(node.tick_us, self.on_tick, nid, incarnation)

    # --- clients ----------------------------------------------------------------------------

    def client_next(self, client: int) -> None:
        if self.now >= (self.opts.duration_ms + self.opts.settle_ms // 2) * MS:
            return  # let the last operations finish
        rng = self.rng
        key = f"k{rng.randrange(self.opts.keys)}"
        if rng.random() < 0.55:
            op = Operation(client, key, "write", next(self.op_counter), self.now)
        else:
            op = Operation(client, key, "read", None, self.now)
        cop = _ClientOp(op, client)
        self.client_ops[client] = cop
        self.history.append(op)
        self.schedule(600 * MS, self._client_timeout, cop)
        self._send_request(cop, self._pick_node(client))

    def _pick_node(self, client: int, hint: int = 0) -> int:
        live = sorted(n for n in self.nodes if n not in self.removed)
        if hint in self.nodes and self.rng.random() < 0.9:
            return hint
        leaders = [n for n in live if self.nodes[n].alive and self.nodes[n].core.role is Role.LEADER]
        if leaders and self.rng.random() < 0.6:
            return self.rng.choice(leaders)  # clients cache the leader they last talked to
        return self.rng.choice(live)

    def _send_request(self, cop: _ClientOp, nid: int) -> None:
        cop.attempt += 1
        self.schedule(self.rng.randrange(100, 2 * MS), self._arrive, cop, nid)

    def _arrive(self, cop: _ClientOp, nid: int) -> None:
        node = self.nodes.get(nid)
        if cop.done or node is None or not node.alive:
            return
        node.handle_request(cop)

    def redirect(self, cop: _ClientOp, hint: int) -> None:
        if cop.done:
            return
        self.schedule(self.rng.randrange(1 * MS, 10 * MS), self._retry, cop, hint)

    def _retry(self, cop: _ClientOp, hint: int) -> None:
        if not cop.done:
            self._send_request(cop, self._pick_node(cop.client, hint))

    def reply(self, cop: _ClientOp, ok: bool) -> None:
        if cop.done:
            return
        if not ok:
            self._finish(cop, unknown=True)
            return
        value = cop.op.value
        self.schedule(self.rng.randrange(100, 2 * MS), self._receive, cop, value)

    def _receive(self, cop: _ClientOp, value: int | None) -> None:
        if cop.done:
            return
        cop.op.value = value
        cop.op.ret = self.now
        self.stats.ops_ok += 1
        self._finish(cop, unknown=False)

    def _client_timeout(self, cop: _ClientOp) -> None:
        if not cop.done:
            self._finish(cop, unknown=True)

    def _finish(self, cop: _ClientOp, unknown: bool) -> None:
        cop.done = True
        if unknown:
            cop.op.ret = math.inf
            self.stats.ops_unknown += 1
        self.schedule(self.rng.randrange(1 * MS, 20 * MS), self.client_next, cop.client)

    # --- faults -----------------------------------------------------------------------------

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self.nodes.values() if n.alive and n.core.role is Role.LEADER]
        return max(leaders, key=lambda n: n.core.term) if leaders else None

    def inject_fault(self) -> None:
        rng = self.rng
        kind = rng.choices(
            ["partition", "one_way", "isolate_leader", "crash", "crash_mid_write", "transfer", "membership", "skew"],
            weights=[3, 2, 2, 3, 2, 2, 2, 1],
        )[0]
        members = [n for n in self.nodes if n not in self.removed]
        if kind in ("partition", "one_way", "isolate_leader"):
            self.stats.partitions += 1
            if kind == "partition":
                side = set(rng.sample(members, rng.randrange(1, len(members))))
                pairs = {(a, b) for a in members for b in members if (a in side) != (b in side)}
            elif kind == "one_way":
                a, b = rng.sample(members, 2)
                pairs = {(a, b)}
            else:
                leader = self._leader()
                if leader is None:
                    return
                pairs = {(leader.id, b) for b in members if b != leader.id}
                pairs |= {(b, a) for a, b in pairs}
            self.cut |= pairs
            self.schedule(rng.randrange(100 * MS, 700 * MS), self._heal, pairs)
        elif kind in ("crash", "crash_mid_write"):
            candidates = [n for n in members if self.nodes[n].alive]
            if not candidates:
                return
            node = self.nodes[rng.choice(candidates)]
            self.stats.crashes += 1
            if kind == "crash":
                node.crash()
            else:
                node.crash_mid_write = True  # dies during its next persist, before fsync
            self.schedule(rng.randrange(50 * MS, 500 * MS), self._restart, node.id)
        elif kind == "transfer":
            leader = self._leader()
            if leader is not None:
                voters = sorted(leader.core.conf.voters - {leader.id})
                if voters:
                    self.stats.transfers += 1
                    leader.core.transfer_leadership(rng.choice(voters))
                    leader.process()
        elif kind == "membership" and not self.membership_busy:
            self._replace_member()
        elif kind == "skew":
            node = self.nodes[rng.choice(members)]
            node.tick_us = int(10 * MS * rng.uniform(0.7, 1.4))

    def _heal(self, pairs: set[tuple[int, int]]) -> None:
        self.cut -= pairs

    def _restart(self, nid: int) -> None:
        node = self.nodes.get(nid)
        if node is None or nid in self.removed:
            return
        if node.alive and node.crash_mid_write:
            return self.schedule(50 * MS, self._restart, nid)  # it has not died yet
        if not node.alive:
            node.boot()

    def heal_all(self) -> None:
        self.cut.clear()
        self.default_link = _Link(0.0, 0.0, 0.0)
        for nid, node in self.nodes.items():
            node.crash_mid_write = False
            if not node.alive and nid not in self.removed:
                node.boot()

    # --- membership: replace a voter by a fresh member (a station that lost its disk) -------

    def _replace_member(self) -> None:
        leader = self._leader()
        if leader is None or len(leader.core.conf.voters) < 2:
            return
        victim = self.rng.choice(sorted(leader.core.conf.voters))
        if not self._propose_change(leader, ConfChange(ConfChangeOp.REMOVE, victim)):
            return
        self.membership_busy = True
        self.stats.conf_changes += 1
        self.schedule(20 * MS, self._membership_step, victim, 0, 0)

    def _propose_change(self, leader: SimNode, change: ConfChange) -> bool:
        try:
            leader.core.propose_conf_change(change)
        except (NotLeaderError, ProposalRejected):
            return False
        leader.process()
        return True

    def _membership_step(self, victim: int, newcomer: int, attempts: int) -> None:
        """Drive remove(victim) -> add learner(newcomer) -> promote, re-proposing as leaders change."""
        if attempts > 200:
            self.membership_busy = False
            return
        leader = self._leader()
        again = (victim, newcomer, attempts + 1)
        if leader is None:
            return self.schedule(20 * MS, self._membership_step, *again)
        conf = leader.core.conf
        if victim in conf.members:
            self._propose_change(leader, ConfChange(ConfChangeOp.REMOVE, victim))
        elif newcomer == 0:
            self.removed.add(victim)
            gone = self.nodes[victim]
            gone.alive = False  # the station is gone, disk and all
            newcomer = self.next_node_id
            self.next_node_id += 1
            self._add_node(newcomer, SimDisk(random.Random(self.rng.random()), lossy=self.opts.lossy_disk))
            self.stats.conf_changes += 1
            self._propose_change(leader, ConfChange(ConfChangeOp.ADD_LEARNER, newcomer))
        elif newcomer not in conf.members:
            self._propose_change(leader, ConfChange(ConfChangeOp.ADD_LEARNER, newcomer))
        elif newcomer in conf.learners:
            pr = leader.core.progress.get(newcomer)
            if pr is not None and pr.match + 5 >= leader.core.log.committed:
                self.stats.conf_changes += 1
                self._propose_change(leader, ConfChange(ConfChangeOp.ADD_VOTER, newcomer))
        else:
            self.membership_busy = False
            return
        self.schedule(20 * MS, self._membership_step, victim, newcomer, attempts + 1)


def run_schedule(seed: int, options: SimOptions) -> ScheduleResult:
    return Simulation(seed, options).run()
