"""One simulated schedule of the production stack, drawn from a single seed.

Each station runs the production Replica (controlplane/replica.py): RaftNode, the fleet
state with its sessions and change feed, the RPC client, and DiskStorage from persist/ on a
simulated disk (sim/fs.py). The network (sim/network.py), the clock and the order of
ready callbacks (sim/loop.py) are simulated; nothing else is. Faults: partitions (two-sided,
one-way, leader isolated), lost and delayed messages, process kills and power losses
(between any two disk operations, also while installing a snapshot), failing fsyncs, slow
disks, flipped bits in logs at rest, clock skew, leadership transfers, and members replaced
(a station lost with its disk). Clients pipeline commands through the SDK's ClientSession,
retry, and read back; telemetry batches (some malformed) go to the leader.

Checked: Raft's safety properties as they happen, durability of everything fsynced across
every restart, exactly-once (no command applied twice, no definite refusal of an applied
command), linearizable reads and writes, progress once faults are healed, one leader at the
end, equal replicas, and no exception escaping the production code.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import itertools
import logging
import random
import struct
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from controlplane import bugs
from controlplane.node import NodeFailed
from controlplane.persist import DiskStorage, StorageError
from controlplane.persist.wal import HEADER_BYTES
from controlplane.raft.core import RaftError
from controlplane.raft.messages import Ready, Role
from controlplane.replica import Replica, ReplicaSettings
from controlplane.rpc.config import RPCConfig
from controlplane.session import ClientSession
from controlplane.sim.clients import Gateway, SimClient, Unreachable
from controlplane.sim.fs import SimCrash, SimFileSystem
from controlplane.sim.invariants import InvariantChecker
from controlplane.sim.linearizability import Operation, check_history
from controlplane.sim.loop import SimLoop, current_node
from controlplane.sim.network import SimNetwork, address
from controlplane.sim.observe import Durable, ExactlyOnce, ObservedStateMachine, ObservedStorage
from controlplane.sim.scenarios import SCENARIO_SETTINGS, SCENARIOS
from controlplane.state.telemetry import encode_segment, normalize

DATA = Path("/station/data")
FAULTS = (
    ("partition", 3),
    ("one_way", 2),
    ("isolate_leader", 2),
    ("leader_and_one", 1),
    ("kill", 2),
    ("reboot_into_partition", 1),
    ("power_loss", 2),
    ("crash_mid_io", 2),
    ("crash_in_snapshot_install", 1),
    ("fsync_error", 1),
    ("corrupt_log", 1),
    ("slow_disk", 1),
    ("transfer", 2),
    ("membership", 2),
    ("resize", 2),
    ("skew", 1),
)
# Campaigns that lean on one kind of trouble (as FoundationDB's test specs weight workloads):
# the weights of the named faults are multiplied; "snapshots" also snapshots every few entries
# and keeps no log behind a snapshot, so lagging replicas need one.
FOCUS: dict[str, dict[str, int]] = {
    "membership": {"resize": 6, "membership": 2, "reboot_into_partition": 3},
    "snapshots": {"leader_and_one": 8, "kill": 3, "power_loss": 2, "crash_in_snapshot_install": 3},
}
FOCUS_SETTINGS: dict[str, dict[str, int]] = {"snapshots": {"snapshot_every": 1, "compaction_keep": 0}}


@dataclass(frozen=True)
class SimOptions:
    replicas: int = 3
    duration_ms: int = 4000  # faults and client load
    settle_ms: int = 3000  # faults healed, clients finishing
    clients: int = 3
    keys: int = 3
    lossy_disk: bool = False
    faults: bool = True
    bug: str | None = None
    focus: str | None = None
    scenario: str | None = None  # a scripted fault timeline (sim/scenarios.py) instead of random faults

    def __post_init__(self) -> None:
        if self.scenario is not None and self.scenario not in SCENARIOS:
            raise ValueError(f"scenario must be one of {sorted(SCENARIOS)}, got {self.scenario!r}")
        if not 1 <= self.replicas <= 9:
            raise ValueError(f"replicas must be 1-9, got {self.replicas}")
        if self.focus is not None and self.focus not in FOCUS:
            raise ValueError(f"focus must be one of {sorted(FOCUS)}, got {self.focus!r}")
        if self.bug is not None:
            bugs.check(self.bug)


@dataclass
class ScheduleStats:
    ops: int = 0
    ops_ok: int = 0
    ops_unknown: int = 0
    elections: int = 0
    crashes: int = 0
    power_losses: int = 0
    crashes_mid_io: int = 0
    torn_writes: int = 0
    fsync_errors: int = 0
    corruptions: int = 0
    refused_starts: int = 0
    partitions: int = 0
    conf_changes: int = 0
    replaced: int = 0
    transfers: int = 0
    snapshots_taken: int = 0
    snapshots_installed: int = 0
    messages: int = 0
    telemetry_batches: int = 0
    telemetry_refused: int = 0
    expired_answers: int = 0
    refused_commands: int = 0
    undecided: int = 0  # histories too tangled for the linearizability search's budget


@dataclass
class ScheduleResult:
    seed: int
    replicas: int
    violations: list[str]
    linearizable: bool
    stats: ScheduleStats
    converged: bool


@dataclass
class SimNode:
    id: int
    fs: SimFileSystem
    founder: bool
    tick_interval: float
    incarnation: int = 0
    alive: bool = False
    replica: Replica | None = None
    durable: Durable | None = None
    removed: bool = False
    damaged: str | None = None  # why its disk was refused
    corrupted: bool = False  # bits flipped in its log, not yet booted since
    crash_on_snapshot_install: bool = False
    slow_disk_until: float = 0.0
    rewriting: bool = False  # a truncation or snapshot install was in flight
    restart_pending: bool = False
    booting: bool = False


class Simulation:
    def __init__(self, seed: int, options: SimOptions) -> None:
        self.seed = seed
        self.opts = options
        self.rng = rng = random.Random(seed)
        self._focus = options.focus
        self.loop = SimLoop(random.Random(rng.random()))
        self.loop.set_exception_handler(self._unhandled)
        self.network = SimNetwork(random.Random(rng.random()))
        self.checker = InvariantChecker(raise_on_violation=False)
        self.exactly_once = ExactlyOnce()
        self.stats = ScheduleStats()
        self.violations: list[str] = []
        self.history: list[Operation] = []
        self.final_answers: list[Any] = []
        self.gateway = Gateway(self)
        self._tasks: set[asyncio.Task[Any]] = set()
        tick = rng.choice([0.01, 0.02, 0.05])
        self.tick = tick
        self.settings = ReplicaSettings(
            tick_interval=tick,
            election_ticks=rng.choice([8, 10, 12]),
            snapshot_every=rng.choice([15, 40, 100, 10**6]),
            rpc=RPCConfig(timeout=10 * tick, max_retries=2, retry_delay=tick / 2),
            max_entries_per_msg=rng.choice([1, 4, 64]),
            max_inflight_msgs=rng.choice([1, 4, 64]),
            snapshot_chunk_bytes=rng.choice([64, 1024, 1 << 20]),
            compaction_keep=rng.choice([0, 3, 20]),
            session_ttl_entries=rng.choice([20, 60, 400, 10**6]),
        )
        overrides = SCENARIO_SETTINGS.get(options.scenario or "", FOCUS_SETTINGS.get(self._focus or "", {}))
        self.settings = dataclasses.replace(self.settings, **overrides)  # type: ignore[arg-type]
        self.segment_bytes = rng.choice([1024, 4096, 1 << 20])
        self.op_timeout = 60 * tick
        # Long enough after healing for elections, catch-up and clients' timeouts to pass.
        self.settle = max(options.settle_ms / 1000, 120 * tick)
        self.call_timeout = 20 * tick
        self.propose_timeout = 15 * tick
        self.base_loss = rng.choice([0.0, 0.01, 0.05]) if options.faults else 0.0
        self.network.faults.loss = self.base_loss
        self.nodes: dict[int, SimNode] = {}
        self.founders = list(range(1, options.replicas + 1))
        self.next_id = options.replicas + 1
        self.values = itertools.count(1)
        self.membership_busy = False
        self.heal_time = 0.0
        self.keys = [f"u{i}" for i in range(options.keys)]
        for nid in self.founders:
            self._add_node(nid, founder=True)

    # --- plumbing ---------------------------------------------------------------------------

    def _add_node(self, nid: int, *, founder: bool) -> SimNode:
        skew = self.rng.uniform(0.8, 1.25) if self.opts.faults else 1.0
        fs = SimFileSystem(random.Random(self.rng.random()))
        node = self.nodes[nid] = SimNode(nid, fs, founder, self.tick * skew)
        fs.on_crash = lambda: self._crash_soon(node)
        if self.opts.lossy_disk:
            fs.lies_about_fsync = True
        return node

    def _crash_soon(self, node: SimNode) -> None:
        self.loop.call_soon(self._stop_node, node, True)

    def spawn_task(self, task: asyncio.Task[Any]) -> None:
        """Keep a reference to a fire-and-forget task until it is done."""
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def spawn(self, node: SimNode, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run coro as one of node's tasks (cancelled when the node dies)."""
        ctx = contextvars.copy_context()
        ctx.run(current_node.set, (node.id, node.incarnation))
        task = self.loop.create_task(coro, context=ctx)
        self.spawn_task(task)
        return task

    def next_value(self) -> int:
        return next(self.values)

    def is_member(self, nid: int) -> bool:
        node = self.nodes.get(nid)
        return node is not None and not node.removed

    def random_live_node(self, rng: random.Random) -> int:
        live = sorted(n.id for n in self.nodes.values() if n.alive and not n.removed)
        return rng.choice(live) if live else 0

    def _unhandled(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, SimCrash | asyncio.CancelledError | NodeFailed):
            return  # a crash we caused; a failed loop is reported by on_failure
        if isinstance(exc, OSError) and "simulated I/O error" in str(exc):
            return
        self.violations.append(f"unhandled in production code at t={self.loop.time():.3f}s: {context.get('message')}: "
                               f"{type(exc).__name__}: {exc}")  # fmt: skip

    async def _disk(self, node: SimNode, work: Callable[[], Any]) -> Any:
        """A stand-in for the worker thread: blocking work takes simulated disk time."""
        latency = self.rng.uniform(0.0002, 0.003)
        if self.loop.time() < node.slow_disk_until:
            latency += self.rng.uniform(0.05, 0.5)
        await asyncio.sleep(latency)
        return work()

    # --- lifecycle of a station's replica ---------------------------------------------------

    def boot(self, node: SimNode) -> None:
        if node.removed or node.alive or node.damaged or node.booting:
            return
        node.booting = True
        node.incarnation += 1
        node.restart_pending = False
        node.fs.reboot()
        self.spawn(node, self._boot(node))

    async def _boot(self, node: SimNode) -> None:
        try:
            await self._start_replica(node)
        finally:
            node.booting = False

    async def _start_replica(self, node: SimNode) -> None:
        try:
            storage = DiskStorage(DATA, cluster="sim", node_id=node.id, segment_bytes=self.segment_bytes, fs=node.fs)
        except StorageError as exc:  # CorruptionError included: refused, as it should be
            if not node.corrupted and not self.opts.lossy_disk:
                self.violations.append(f"node {node.id} refused to start on a disk nothing damaged: {exc}")
            node.damaged = str(exc)
            self.stats.refused_starts += 1
            self.spawn_harness(self._replace(node.id))
            return
        if storage.is_empty() and node.founder and node.incarnation == 1:
            storage.bootstrap(self.founders)
        incarnation = node.incarnation

        def durable(d: Durable | None) -> None:
            node.rewriting = d is None
            if d is not None:
                node.durable = d

        def before_persist(rd: Ready) -> None:
            if rd.snapshot is not None:
                self.stats.snapshots_installed += 1
                if node.crash_on_snapshot_install:
                    node.crash_on_snapshot_install = False
                    node.fs.crash_after(self.rng.randint(1, 8))  # somewhere in saving it

        def snapshot_saved() -> None:
            self.stats.snapshots_taken += 1

        observed = ObservedStorage(
            storage, node.id, self.checker, lambda: replica.node, durable, before_persist, snapshot_saved
        )
        replica = Replica(
            node.id,
            observed,
            self.network.transport(node.id),
            address,
            self.settings,
            seed=self.seed,
            rng=random.Random(self.rng.random()),
            run_blocking=lambda work: self._disk(node, work),
            on_failure=lambda exc: self._loop_failed(node, incarnation, exc),
        )
        replica.node.tick_interval = node.tick_interval
        replica.node.sm = ObservedStateMachine(
            replica.node.sm,
            node.id,
            self.checker,
            self.exactly_once,
            lambda: replica.node.core.term if replica.node.core else 0,
        )
        await replica.start()
        assert observed.recovered is not None
        if node.durable is not None and not node.rewriting:
            problem = node.durable.problem_with(observed.recovered)
            if problem:
                self.violations.append(f"durability: node {node.id} restarted without what it had synced: {problem}")
        node.replica = replica
        node.alive = True
        node.corrupted = False
        self.network.listen(node.id, replica.deliver)

    def spawn_harness(self, coro: Coroutine[Any, Any, Any]) -> None:
        ctx = contextvars.copy_context()
        ctx.run(current_node.set, None)
        self.spawn_task(self.loop.create_task(coro, context=ctx))

    def _loop_failed(self, node: SimNode, incarnation: int, exc: BaseException) -> None:
        if node.incarnation != incarnation:
            return
        injected = isinstance(exc, OSError) and "simulated I/O error" in str(exc)
        if not injected:
            self.violations.append(
                f"raft loop of node {node.id} died at t={self.loop.time():.3f}s: {type(exc).__name__}: {exc}"
            )
        # The shell takes the replica down; Ray restarts it from its disk.
        self.loop.call_soon(self._stop_node, node, False)

    def _stop_node(self, node: SimNode, power_loss: bool, restart_in: float | None = None) -> None:
        """The replica's process dies (power_loss: and the machine with it); it restarts
        after `restart_in` seconds (default: 5-50 ticks), as Ray or the station would."""
        if node.incarnation == 0:
            return
        node.alive = False
        node.booting = False  # a boot in progress dies with the process
        node.replica = None
        self.network.unlisten(node.id)
        self.loop.cancel_node((node.id, node.incarnation))
        node.fs.crash(power_loss=power_loss)
        self.stats.crashes += 1
        self.stats.power_losses += int(power_loss)
        if not node.removed and not node.restart_pending:
            node.restart_pending = True
            delay = self.rng.uniform(5, 50) * self.tick if restart_in is None else restart_in
            self.loop.call_later(delay, self.boot, node)

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> ScheduleResult:
        quiet = logging.getLogger("controlplane")
        level = quiet.level
        quiet.setLevel(logging.CRITICAL + 1)  # failures are findings here, reported once, not logs
        try:
            with bugs.switched_on(*([self.opts.bug] if self.opts.bug else [])):
                return self._run()
        finally:
            quiet.setLevel(level)

    def _run(self) -> ScheduleResult:
        if True:
            try:
                self.loop.run_until_complete(self._main())
            except Exception as exc:  # the harness itself failing is a finding too
                self.violations.append(f"simulation failed: {type(exc).__name__}: {exc}")
            finally:
                self._shutdown()
        return self._result()

    async def _main(self) -> None:
        opts, loop = self.opts, self.loop
        for node in self.nodes.values():
            self.boot(node)
        await self._setup()
        end_faults = loop.time() + opts.duration_ms / 1000
        end = end_faults + self.settle
        stop_clients = end_faults + 0.8 * self.settle
        clients = [SimClient(self, i, self.rng.choice([1, 2, 4]), self.keys) for i in range(opts.clients)]
        tasks = [loop.create_task(c.run(stop_clients)) for c in clients]
        tasks.append(loop.create_task(self._telemetry(stop_clients)))
        if opts.scenario is not None:
            tasks.append(loop.create_task(SCENARIOS[opts.scenario](self)))
        elif opts.faults:
            tasks.append(loop.create_task(self._faults(end_faults)))
        await asyncio.sleep(max(0.0, end_faults - loop.time()))
        self._heal()
        await asyncio.sleep(max(0.0, end - loop.time()))
        # Load has stopped: every replica must catch up, however it has to (entries, or
        # snapshots in small chunks), within a bound.
        deadline = loop.time() + 300 * self.tick
        while not self._converged() and loop.time() < deadline:
            await asyncio.sleep(5 * self.tick)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._check_end(clients)

    async def _setup(self) -> None:
        """Register a station and the UAVs whose altitude the clients use as registers."""
        session = ClientSession("setup")
        setup = SimClient(self, -1, 1, self.keys)
        setup.session = session
        commands = [{"type": "register_station", "station": "alpha"}] + [
            {"type": "register_uav", "uav": k, "home_station": "alpha", "alt": 0.0} for k in self.keys
        ]
        for command in commands:
            for _ in range(20):
                result, answer = await setup.command(command)
                if result == "applied" or (answer is not None and answer.get("conflict")):
                    break

    def _shutdown(self) -> None:
        loop = self.loop
        pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        loop.close()

    # --- workload: telemetry ----------------------------------------------------------------

    async def _telemetry(self, stop_at: float) -> None:
        rng, loop = self.rng, self.loop
        seq = itertools.count(1)
        while loop.time() < stop_at:
            await asyncio.sleep(rng.uniform(5, 15) * self.tick)
            reports = [
                {"uav": k, "time": loop.time(), "seq": next(seq), "lat": rng.uniform(-80, 80), "battery": 50.0}
                for k in self.keys
            ]
            table, _ = normalize(reports, station="alpha")
            malformed = rng.random() < 0.15
            segment = _malformed_segment(table, rng) if malformed else encode_segment(table)
            leader = self._leader()
            if leader is None:
                continue
            self.stats.telemetry_batches += 1
            try:
                await self.gateway.call(leader.id, _submitting(segment), self.call_timeout)
            except ValueError:
                self.stats.telemetry_refused += 1
            except (Unreachable, RaftError, TimeoutError, TypeError):
                pass

    # --- faults -----------------------------------------------------------------------------

    def _leader(self) -> SimNode | None:
        leaders = [n for n in self.nodes.values() if n.alive and n.replica is not None and n.replica.node.is_leader]
        return max(leaders, key=lambda n: n.replica.node.status().term if n.replica else 0) if leaders else None

    def _members(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if not n.removed and not n.damaged]

    async def _faults(self, end: float) -> None:
        rng, loop = self.rng, self.loop
        boost = FOCUS.get(self._focus or "", {})
        kinds = [kind for kind, _ in FAULTS]
        weights = [weight * boost.get(kind, 1) for kind, weight in FAULTS]
        await asyncio.sleep(10 * self.tick)
        while loop.time() < end:
            self._inject(rng.choices(kinds, weights)[0])
            await asyncio.sleep(rng.uniform(8, 40) * self.tick)

    def _inject(self, kind: str) -> None:
        rng = self.rng
        members = self._members()
        live = [n for n in members if n.alive]
        ids = [n.id for n in members]
        if kind in ("partition", "one_way", "isolate_leader") and len(ids) > 1:
            if kind == "partition":
                self._cut_off(set(rng.sample(ids, rng.randrange(1, len(ids)))), ids)
            elif kind == "one_way":
                a, b = rng.sample(ids, 2)
                self._cut({(a, b)})
            elif (leader := self._leader()) is not None:
                self._cut_off({leader.id}, ids)
        elif kind == "leader_and_one" and len(ids) > 3:
            # The leader keeps one follower, the one furthest behind, and loses the majority:
            # what it appends from now on reaches only that follower, and is never committed.
            leader = self._leader()
            if leader is None or leader.replica is None:
                return
            match = leader.replica.node.status().match
            # Furthest behind: a replica that is down and coming back, else the laggard.
            down = [n.id for n in members if not n.alive and n.restart_pending and n.id != leader.id]
            followers = down or [n.id for n in live if n.id != leader.id]
            if not followers:
                return
            follower = min(followers, key=lambda n: (match.get(n, 0), n))
            self._cut_off({leader.id, follower}, ids)
        elif kind in ("kill", "power_loss") and live:
            self._stop_node(rng.choice(live), kind == "power_loss")
        elif kind == "reboot_into_partition" and len(live) > 2:
            # A station reboots while its links flap: it comes back cut off with one peer.
            node, peer = rng.sample(live, 2)
            self._cut_off({node.id, peer.id}, ids, (40, 120))
            self._stop_node(node, rng.random() < 0.5)
        elif kind == "crash_mid_io" and live:
            node = rng.choice(live)
            node.fs.crash_after(rng.randint(1, 40))
            self.stats.crashes_mid_io += 1
        elif kind == "crash_in_snapshot_install" and live:
            rng.choice(live).crash_on_snapshot_install = True
        elif kind == "fsync_error" and live:
            rng.choice(live).fs.fail_next_fsync()
        elif kind == "corrupt_log":
            self._corrupt_a_log()
        elif kind == "slow_disk" and live:
            rng.choice(live).slow_disk_until = self.loop.time() + rng.uniform(5, 40) * self.tick
        elif kind == "transfer":
            leader = self._leader()
            if leader is not None and leader.replica is not None:
                voters = sorted(leader.replica.node.status().conf.voters - {leader.id})
                if voters:
                    self.stats.transfers += 1
                    leader.replica.node.transfer_leadership(rng.choice(voters))
        elif kind in ("membership", "resize") and not self.membership_busy and not self._damaged():
            if kind == "resize":
                self.spawn_harness(self._resize())
            elif len(members) > 1:
                self.spawn_harness(self._replace(rng.choice(members).id))
        elif kind == "skew" and live:
            node = rng.choice(live)
            node.tick_interval = self.tick * rng.uniform(0.7, 1.4)
            if node.replica is not None:
                node.replica.node.tick_interval = node.tick_interval

    def _cut_off(self, side: set[int], ids: list[int], ticks: tuple[float, float] = (10, 70)) -> None:
        """A two-sided partition: `side` from everyone else."""
        self._cut({(a, b) for a in ids for b in ids if (a in side) != (b in side)}, ticks)

    def _cut(self, pairs: set[tuple[int, int]], ticks: tuple[float, float] = (10, 70)) -> None:
        self.stats.partitions += 1
        self.network.cut |= pairs
        self.loop.call_later(self.rng.uniform(*ticks) * self.tick, self._heal_pairs, pairs)

    def _heal_pairs(self, pairs: set[tuple[int, int]]) -> None:
        self.network.cut -= pairs

    def _heal(self) -> None:
        self.heal_time = self.loop.time()
        self.network.cut.clear()
        self.network.faults.loss = 0.0
        for node in self._members():
            node.slow_disk_until = 0.0
            node.crash_on_snapshot_install = False
            node.fs.disarm()
            if not node.alive and not node.restart_pending:
                self.boot(node)

    def _configuration_settled(self) -> bool:
        """At least three voters, and every live member applied the leader's configuration
        (else some still count votes in an older one, whose majority a lost disk may break)."""
        leader = self._leader()
        if leader is None or leader.replica is None:
            return False
        try:
            conf = leader.replica.node.status().conf
            return len(conf.voters) >= 3 and all(
                n.replica.node.status().conf == conf for n in self._members() if n.alive and n.replica is not None
            )
        except RaftError:  # a replica whose loop just failed
            return False

    def _damaged(self) -> bool:
        return any((n.damaged or n.corrupted) and not n.removed for n in self.nodes.values())

    def _corrupt_a_log(self) -> None:
        """Flip a bit in the length of a record in the middle of a log at rest (the replica
        is stopped first): it must refuse to start, never start without what follows."""
        if self.membership_busy or self._damaged() or not self._configuration_settled():
            return  # one lost disk at a time, and a majority of every configuration in use survives
        candidates = [n for n in self._members() if n.durable is not None and n.incarnation > 0]
        if not candidates:
            return
        node = self.rng.choice(candidates)
        if node.alive:
            self._stop_node(node, False)
        records = []
        for path, data in node.fs.files_at_rest(DATA / "wal").items():
            pos = 0
            while pos + HEADER_BYTES <= len(data):
                (length,) = struct.unpack_from("<I", data, pos)
                if pos + HEADER_BYTES + length > len(data):
                    break
                records.append((path, pos))
                pos += HEADER_BYTES + length
        if len(records) < 3:
            return
        path, pos = self.rng.choice(records[:-2])  # never the last: that one may pass for torn
        node.fs.flip_bit(path, pos + 2, self.rng.randrange(8))  # the length's third byte: far past the end
        node.corrupted = True
        self.stats.corruptions += 1

    # --- membership: replace a member by a fresh one (a station lost with its disk) ---------

    async def _replace(self, victim_id: int) -> None:
        """A fresh member on a new station takes the place of `victim_id` (in either order:
        add first, or remove first)."""
        if self.membership_busy:
            self.loop.call_later(20 * self.tick, self.spawn_harness, self._replace(victim_id))
            return
        newcomer = self._new_member()
        add = [("add_learner", newcomer), ("add_voter", newcomer)]
        remove = [("remove", victim_id)]
        if await self._change_membership(remove + add if self.rng.random() < 0.4 else add + remove):
            self.stats.replaced += 1

    async def _resize(self) -> None:
        """Grow a group of three by two stations, or shrink a larger one by two."""
        leader = self._leader()
        if leader is None or leader.replica is None:
            return
        voters = sorted(leader.replica.node.status().conf.voters)
        if len(voters) > 3:
            await self._change_membership([("remove", victim) for victim in self.rng.sample(voters, 2)])
        elif await self._grow(2) and self.rng.random() < 0.7:
            self._churn(voters)

    async def _grow(self, count: int) -> bool:
        steps = []
        for _ in range(count):
            newcomer = self._new_member()
            steps += [("add_learner", newcomer), ("add_voter", newcomer)]
        return await self._change_membership(steps)

    def _churn(self, old_voters: list[int]) -> None:
        """Right after the group grew, two of its old members are cut off together and one
        of them reboots: it must come back knowing the group it is in now."""
        live = [n for n in old_voters if self.nodes[n].alive]
        if len(live) < 2:
            return
        node, peer = self.rng.sample(live, 2)
        self._cut_off({node, peer}, [n.id for n in self._members()], (60, 150))
        self._stop_node(self.nodes[node], self.rng.random() < 0.5, restart_in=self.rng.uniform(1, 5) * self.tick)

    def _new_member(self) -> int:
        node = self._add_node(self.next_id, founder=False)
        self.next_id += 1
        self.boot(node)
        return node.id

    async def _change_membership(self, steps: list[tuple[str, int]]) -> bool:
        """Drive one change at a time through whoever leads, as the controller does."""
        if self.membership_busy:
            return False
        self.membership_busy = True
        try:
            for op, target in steps:
                if not await self._membership_step(op, target):
                    return False  # out of time; the group carries on with what committed
                if op == "remove":
                    victim = self.nodes[target]
                    victim.removed = True  # the station is gone, disk and all
                    if victim.alive:
                        self._stop_node(victim, True)
            return True
        finally:
            self.membership_busy = False

    async def _membership_step(self, op: str, target: int) -> bool:
        loop = self.loop
        deadline = loop.time() + 300 * self.tick
        while loop.time() < deadline:
            leader = self._leader()
            if leader is None or leader.replica is None:
                await asyncio.sleep(5 * self.tick)
                continue
            status = leader.replica.node.status()
            members = status.conf.voters | status.conf.learners
            if (
                (op == "remove" and target not in members)
                or (op == "add_learner" and target in members)
                or (op == "add_voter" and target in status.conf.voters)
            ):
                return True
            if op == "add_voter" and status.match.get(target, 0) + 5 < status.commit:
                await asyncio.sleep(5 * self.tick)  # promote only a learner that caught up
                continue
            try:
                await self.gateway.call(leader.id, _changing(op, target, 20 * self.tick), self.call_timeout)
                self.stats.conf_changes += 1
            except (Unreachable, RaftError, TimeoutError, ValueError):
                await asyncio.sleep(5 * self.tick)
        return False

    # --- the verdict ------------------------------------------------------------------------

    def _check_end(self, clients: list[SimClient]) -> None:
        members = [n for n in self._members() if n.alive and n.replica is not None]
        claims = []
        for node in members:
            assert node.replica is not None
            try:
                if node.replica.node.status().role is Role.LEADER:
                    claims.append(node.id)
            except RaftError:
                pass
        if len(claims) > 1:
            self.violations.append(f"after healing, replicas {claims} all still claim to lead")
        settled = self.heal_time + 0.2 * self.settle
        stuck = [c.index for c in clients if c.last_completed_at < settled]
        if stuck:
            self.violations.append(f"no progress after the faults healed: clients {stuck} completed nothing since")

    def _result(self) -> ScheduleResult:
        violations = list(self.checker.violations) + list(self.exactly_once.violations) + self.violations
        for answer in self.final_answers:
            if answer.outcome == "refused" and (answer.client, answer.seq) in self.exactly_once.applied:
                violations.append(
                    f"exactly-once: {answer.client}/{answer.seq} was answered as refused "
                    f"({answer.answer and answer.answer.get('error')}) but was applied"
                )
        linearizable = True
        if not violations:
            try:
                result = check_history(self.history, initial=0)
            except RuntimeError:
                self.stats.undecided = 1  # the search ran out of budget: reported, not passed
            else:
                if not result.ok:
                    linearizable = False
                    violations.append(f"history not linearizable on key {result.failing_key}")
        s = self.stats
        s.ops = len(self.history)
        s.ops_ok = sum(1 for op in self.history if op.completed)
        s.ops_unknown = s.ops - s.ops_ok
        s.elections = len(self.checker.leader_of_term)
        s.messages = self.network.messages
        s.torn_writes = sum(n.fs.torn_writes for n in self.nodes.values())
        s.fsync_errors = sum(n.fs.failed_fsyncs for n in self.nodes.values())
        s.expired_answers = sum(1 for a in self.final_answers if a.answer and a.answer.get("expired"))
        s.refused_commands = sum(1 for a in self.final_answers if a.outcome == "refused")
        return ScheduleResult(self.seed, self.opts.replicas, violations, linearizable, s, self._converged())

    def _converged(self) -> bool:
        """Every live replica of the leader's configuration at the same applied index, with
        the same tables (a station added but never let in does not count)."""
        leader = self._leader()
        if leader is None or leader.replica is None:
            return False
        conf = leader.replica.node.status().conf
        live = [n.replica for n in self._members() if n.alive and n.replica is not None and n.id in conf.members]
        applied = {r.node.applied_index for r in live}
        digests = {r.state.digest() for r in live}
        return len(applied) == 1 and len(digests) == 1


def _submitting(segment: bytes) -> Callable[[Replica], Coroutine[Any, Any, Any]]:
    return lambda replica: replica.submit_segments([segment])


def _changing(op: str, target: int, timeout: float) -> Callable[[Replica], Coroutine[Any, Any, Any]]:
    return lambda replica: replica.change_membership(op, target, timeout)


def _malformed_segment(table: pa.Table, rng: random.Random) -> bytes:
    """A station's segment broken the ways a buggy or hostile station could: the uav column
    not dictionary-encoded (fine once normalised), or a column of the wrong type."""
    if rng.random() < 0.5:
        table = table.select([f.name for f in table.schema])
    else:
        i = table.schema.get_field_index("time")
        table = table.set_column(i, "time", pa.array([str(t) for t in table.column("time").to_pylist()]))
        i = table.schema.get_field_index("uav")
        table = table.set_column(i, "uav", table.column("uav").dictionary_encode())
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    data: bytes = sink.getvalue().to_pybytes()
    return data


def run_schedule(seed: int, options: SimOptions) -> ScheduleResult:
    return Simulation(seed, options).run()
