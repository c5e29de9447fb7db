"""One simulated schedule of the production stack, drawn from a single seed (its faults are
in sim/faults.py, its membership changes in sim/membership.py, its clients and telemetry in
sim/clients.py).

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
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from controlplane import bugs
from controlplane.node import NodeFailed
from controlplane.persist import DiskStorage, StorageError
from controlplane.raft.core import RaftError
from controlplane.raft.messages import Ready, Role, Snapshot
from controlplane.replica import Replica, ReplicaSettings
from controlplane.rpc.config import RPCConfig
from controlplane.sim.clients import Gateway, SimClient, telemetry_workload
from controlplane.sim.faults import FOCUS, FOCUS_SETTINGS, Faults
from controlplane.sim.fs import SimCrash, SimFileSystem
from controlplane.sim.invariants import InvariantChecker
from controlplane.sim.linearizability import Operation, check_history
from controlplane.sim.loop import SimLoop, current_node
from controlplane.sim.membership import Membership
from controlplane.sim.network import SimNetwork, address
from controlplane.sim.observe import Durable, ExactlyOnce, ObservedStateMachine, ObservedStorage
from controlplane.sim.scenarios import SCENARIO_SETTINGS, SCENARIOS

DATA = Path("/station/data")


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
    crash_before_log_reset: bool = False  # once the next received snapshot is saved
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
        self.faults = Faults(self)
        self.membership = Membership(self)
        self.data = DATA
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
        self.heal_time = 0.0
        self.keys = [f"u{i}" for i in range(options.keys)]
        for nid in self.founders:
            self.add_node(nid, founder=True)

    # --- plumbing ---------------------------------------------------------------------------

    def add_node(self, nid: int, *, founder: bool) -> SimNode:
        skew = self.rng.uniform(0.8, 1.25) if self.opts.faults else 1.0
        fs = SimFileSystem(random.Random(self.rng.random()))
        node = self.nodes[nid] = SimNode(nid, fs, founder, self.tick * skew)
        fs.on_crash = lambda: self._crash_soon(node)
        if self.opts.lossy_disk:
            fs.lies_about_fsync = True
        return node

    def _crash_soon(self, node: SimNode) -> None:
        self.loop.call_soon(self.stop_node, node, True)

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
            self.spawn_harness(self.membership.replace(node.id))
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
                if node.crash_before_log_reset:
                    node.crash_before_log_reset = False
                    node.fs.crash_before_touching("wal")

        def snapshot_saved(snapshot: Snapshot) -> None:
            self.stats.snapshots_taken += 1
            observed_sm.check_saved(snapshot)

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
            run_small_write=lambda work: self._disk(node, work),  # every write takes disk time here
            on_failure=lambda exc: self._loop_failed(node, incarnation, exc),
        )
        replica.node.tick_interval = node.tick_interval
        replica.node.sm = observed_sm = ObservedStateMachine(
            replica.node.sm,
            node.id,
            self.checker,
            self.exactly_once,
            lambda: replica.node.core.term if replica.node.core else 0,
            lambda: replica.state,
        )
        await replica.start()
        assert observed.recovered is not None
        if node.durable is not None:
            problem = node.durable.problem_with(observed.recovered, log=not node.rewriting)
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
        self.loop.call_soon(self.stop_node, node, False)

    def stop_node(self, node: SimNode, power_loss: bool, restart_in: float | None = None) -> None:
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
        tasks.append(loop.create_task(telemetry_workload(self, stop_clients)))
        if opts.scenario is not None:
            tasks.append(loop.create_task(SCENARIOS[opts.scenario](self)))
        elif opts.faults:
            tasks.append(loop.create_task(self.faults.run(end_faults)))
        await asyncio.sleep(max(0.0, end_faults - loop.time()))
        self.faults.heal()
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
        setup = SimClient(self, -1, 1, self.keys)
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

    # --- who is who -------------------------------------------------------------------------

    def leader(self) -> SimNode | None:
        leaders = [n for n in self.nodes.values() if n.alive and n.replica is not None and n.replica.node.is_leader]
        return max(leaders, key=lambda n: n.replica.node.status().term if n.replica else 0) if leaders else None

    def members(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if not n.removed and not n.damaged]

    # --- the verdict ------------------------------------------------------------------------

    def _check_end(self, clients: list[SimClient]) -> None:
        members = [n for n in self.members() if n.alive and n.replica is not None]
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
        leader = self.leader()
        if leader is None or leader.replica is None:
            return False
        conf = leader.replica.node.status().conf
        live = [n.replica for n in self.members() if n.alive and n.replica is not None and n.id in conf.members]
        applied = {r.node.applied_index for r in live}
        digests = {r.state.digest() for r in live}
        return len(applied) == 1 and len(digests) == 1


def run_schedule(seed: int, options: SimOptions) -> ScheduleResult:
    return Simulation(seed, options).run()
