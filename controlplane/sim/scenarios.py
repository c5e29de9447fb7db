"""Scripted fault timelines: the same simulation (production replica, simulated disk and
network, clients, every check), but the faults follow a script instead of the seed's dice.
The seed still drives the network, disks, clocks and clients, so each scenario runs in many
interleavings. They aim at interleavings random faults reach only rarely, as etcd-raft's
scripted tests do next to its randomized ones:

    python -m controlplane.sim --scenario NAME --seeds 20
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controlplane.sim.world import Simulation


async def _a_leader(sim: Simulation, ticks: float = 200) -> int:
    deadline = sim.loop.time() + ticks * sim.tick
    while sim.loop.time() < deadline:
        leader = sim.leader()
        if leader is not None:
            return int(leader.id)
        await asyncio.sleep(2 * sim.tick)
    raise RuntimeError("scenario: no leader emerged")


def _log_bounds(sim: Simulation, nid: int) -> tuple[int, int]:
    """A running replica's first and last log index ((0, 0) when it is not running)."""
    replica = sim.nodes[nid].replica
    core = replica.node.core if replica is not None else None
    return (core.log.first_index(), core.log.last_index()) if core is not None else (0, 0)


async def membership_then_restart_in_a_minority(sim: Simulation) -> None:
    """Three voters grow to five (add 4, add 5, all apply both); the group splits {a,b} |
    {c,4,5}; a restarts. It must come back knowing the five, not count votes among the
    three it started with: else a and b elect a second leader and commit at the same
    indices as the majority. (Issue 11, defect 1.)"""
    await asyncio.sleep(20 * sim.tick)
    old = sorted(sim.founders)
    await sim.membership.grow(2)
    deadline = sim.loop.time() + 100 * sim.tick
    while not sim.faults.configuration_settled() and sim.loop.time() < deadline:
        await asyncio.sleep(sim.tick)  # every replica applied both changes
    a, b = sim.rng.sample(old, 2)
    ids = [n.id for n in sim.members()]
    sim.faults.cut_off({a, b}, ids, (150, 200))
    sim.stop_node(sim.nodes[a], sim.rng.random() < 0.5, restart_in=sim.rng.uniform(1, 5) * sim.tick)


async def conflict_right_after_a_snapshot_install(sim: Simulation) -> None:
    """A follower is down while the leader compacts past its log; the leader is then cut off
    with only that follower, which comes back and installs the leader's snapshot, then takes
    the entries the leader can no longer commit. The majority elects a new leader; after
    healing, its entries replace those, starting at the first entry after the snapshot:
    the follower's log must truncate its very first stored entry. (Defect 2.)"""
    await asyncio.sleep(20 * sim.tick)
    leader = await _a_leader(sim)
    follower = sim.rng.choice([n for n in sim.founders if n != leader])
    sim.stop_node(sim.nodes[follower], True, restart_in=10**6)  # down until we say
    await asyncio.sleep(30 * sim.tick)  # the others commit; the leader snapshots past it
    # Cut when the leader has nothing uncommitted: all it appends from then on reaches only
    # the follower, so the first entry after the snapshot it sends is the first to conflict.
    deadline = sim.loop.time() + 200 * sim.tick
    while True:
        leader = await _a_leader(sim)
        replica = sim.nodes[leader].replica
        core = replica.node.core if replica is not None else None
        if core is not None and leader != follower and core.log.last_index() == core.log.committed:
            break
        if sim.loop.time() > deadline:
            return
        await asyncio.sleep(sim.tick / 20)
    ids = [n.id for n in sim.members()]
    cut = {(a, b) for a in ids for b in ids if (a in {leader, follower}) != (b in {leader, follower})}
    sim.network.cut |= cut
    await asyncio.sleep(2 * sim.tick)  # the leader's commit index is frozen: its snapshot catches up
    sim.nodes[follower].restart_pending = False
    sim.boot(sim.nodes[follower])
    # Heal soon after the majority has a leader of its own, before it compacts much further.
    deadline = sim.loop.time() + 200 * sim.tick
    while sim.loop.time() < deadline:
        new = sim.leader()
        if new is not None and new.id not in (leader, follower):
            break
        await asyncio.sleep(sim.tick)
    await asyncio.sleep(sim.rng.uniform(2, 8) * sim.tick)
    sim.network.cut -= cut


async def crash_between_saving_a_snapshot_and_resetting_the_log(sim: Simulation) -> None:
    """A follower is down while the leader compacts past its log; it comes back, receives
    the leader's snapshot and loses power once the snapshot is durable, before its log is
    reset. Its disk then holds a snapshot and an older log that ends before it: the restart
    must join them (drop the covered entries), not append after a gap. (Defect 3.)"""
    await asyncio.sleep(20 * sim.tick)
    leader = await _a_leader(sim)
    follower = sim.nodes[sim.rng.choice([n for n in sim.founders if n != leader])]
    behind = _log_bounds(sim, follower.id)[1]
    sim.stop_node(follower, True, restart_in=10**6)  # down until we say
    deadline = sim.loop.time() + 300 * sim.tick
    while sim.loop.time() < deadline:  # the others commit; the leader compacts past it
        leading = sim.leader()
        if leading is not None and _log_bounds(sim, leading.id)[0] > behind + 1:
            break
        await asyncio.sleep(sim.tick)
    follower.crash_before_log_reset = True
    follower.restart_pending = False
    sim.boot(follower)
    deadline = sim.loop.time() + 200 * sim.tick
    while follower.crash_before_log_reset or follower.alive or follower.booting:
        if sim.loop.time() > deadline:
            return
        await asyncio.sleep(sim.tick / 20)
    sim.boot(follower)  # at once, while the leader still has the entries after its snapshot


async def an_acknowledgement_lost_with_power(sim: Simulation) -> None:
    """One follower's disk slows down and the other is cut off, so the leader's quorum is
    the slow follower alone; then the leader and that follower lose power together while
    the follower is still writing, and the cut-off one comes back. A follower may
    acknowledge an entry only once it is durable (only a leader's appends may leave before
    its own write): else the two survivors elect a leader without entries the old one
    already answered as committed."""
    await asyncio.sleep(20 * sim.tick)
    leader = await _a_leader(sim)
    slow, away = sim.rng.sample([n for n in sim.founders if n != leader], 2)
    sim.nodes[slow].slow_disk_until = sim.loop.time() + 10**6  # until its power goes
    sim.faults.cut_off({away}, [n.id for n in sim.members()], (40, 45))
    await asyncio.sleep(sim.rng.uniform(15, 30) * sim.tick)
    sim.stop_node(sim.nodes[leader], True, restart_in=60 * sim.tick)  # back once the others elected
    sim.stop_node(sim.nodes[slow], True, restart_in=sim.rng.uniform(1, 5) * sim.tick)
    sim.nodes[slow].slow_disk_until = 0.0


Scenario = Callable[["Simulation"], Coroutine[Any, Any, None]]
# Replica settings a scenario needs (ReplicaSettings fields).
SCENARIO_SETTINGS: dict[str, dict[str, int]] = {
    # Snapshot at every entry, so the cut-off leader's snapshot is its commit index; keep
    # 20 entries behind it, so the new leader still sends entries, not a snapshot.
    "conflict_right_after_a_snapshot_install": {"snapshot_every": 1, "compaction_keep": 20},
    # Frequent snapshots, so the returning follower gets one; 20 entries kept behind each, so
    # once restarted it is sent entries, not another snapshot.
    "crash_between_saving_a_snapshot_and_resetting_the_log": {"snapshot_every": 5, "compaction_keep": 20},
    # No snapshot during the run: a restarted replica's configuration comes from its log and
    # its commit index alone.
    "membership_then_restart_in_a_minority": {"snapshot_every": 10**6},
}
SCENARIOS: dict[str, Scenario] = {
    "an_acknowledgement_lost_with_power": an_acknowledgement_lost_with_power,
    "membership_then_restart_in_a_minority": membership_then_restart_in_a_minority,
    "conflict_right_after_a_snapshot_install": conflict_right_after_a_snapshot_install,
    "crash_between_saving_a_snapshot_and_resetting_the_log": crash_between_saving_a_snapshot_and_resetting_the_log,
}
