"""The simulator's faults: what can go wrong, how often, and how each is done to the
stations, their disks and the network between them. The seed draws them; a focus leans the
mix towards one kind of trouble."""

from __future__ import annotations

import asyncio
import struct
from typing import TYPE_CHECKING

from controlplane.persist.wal import HEADER_BYTES
from controlplane.raft.core import RaftError

if TYPE_CHECKING:
    from controlplane.sim.world import Simulation

DATA_WAL = "wal"

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


class Faults:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim

    async def run(self, end: float) -> None:
        rng, loop = self.sim.rng, self.sim.loop
        boost = FOCUS.get(self.sim.opts.focus or "", {})
        kinds = [kind for kind, _ in FAULTS]
        weights = [weight * boost.get(kind, 1) for kind, weight in FAULTS]
        await asyncio.sleep(10 * self.sim.tick)
        while loop.time() < end:
            self.inject(rng.choices(kinds, weights)[0])
            await asyncio.sleep(rng.uniform(8, 40) * self.sim.tick)

    def inject(self, kind: str) -> None:
        rng = self.sim.rng
        members = self.sim.members()
        live = [n for n in members if n.alive]
        ids = [n.id for n in members]
        if kind in ("partition", "one_way", "isolate_leader") and len(ids) > 1:
            if kind == "partition":
                self.cut_off(set(rng.sample(ids, rng.randrange(1, len(ids)))), ids)
            elif kind == "one_way":
                a, b = rng.sample(ids, 2)
                self.cut({(a, b)})
            elif (leader := self.sim.leader()) is not None:
                self.cut_off({leader.id}, ids)
        elif kind == "leader_and_one" and len(ids) > 3:
            # The leader keeps one follower, the one furthest behind, and loses the majority:
            # what it appends from now on reaches only that follower, and is never committed.
            leader = self.sim.leader()
            if leader is None or leader.replica is None:
                return
            match = leader.replica.node.status().match
            # Furthest behind: a replica that is down and coming back, else the laggard.
            down = [n.id for n in members if not n.alive and n.restart_pending and n.id != leader.id]
            followers = down or [n.id for n in live if n.id != leader.id]
            if not followers:
                return
            follower = min(followers, key=lambda n: (match.get(n, 0), n))
            self.cut_off({leader.id, follower}, ids)
        elif kind in ("kill", "power_loss") and live:
            self.sim.stop_node(rng.choice(live), kind == "power_loss")
        elif kind == "reboot_into_partition" and len(live) > 2:
            # A station reboots while its links flap: it comes back cut off with one peer.
            node, peer = rng.sample(live, 2)
            self.cut_off({node.id, peer.id}, ids, (40, 120))
            self.sim.stop_node(node, rng.random() < 0.5)
        elif kind == "crash_mid_io" and live:
            node = rng.choice(live)
            node.fs.crash_after(rng.randint(1, 40))
            self.sim.stats.crashes_mid_io += 1
        elif kind == "crash_in_snapshot_install" and live:
            rng.choice(live).crash_on_snapshot_install = True
        elif kind == "fsync_error" and live:
            rng.choice(live).fs.fail_next_fsync()
        elif kind == "corrupt_log":
            self.corrupt_a_log()
        elif kind == "slow_disk" and live:
            rng.choice(live).slow_disk_until = self.sim.loop.time() + rng.uniform(5, 40) * self.sim.tick
        elif kind == "transfer":
            leader = self.sim.leader()
            if leader is not None and leader.replica is not None:
                voters = sorted(leader.replica.node.status().conf.voters - {leader.id})
                if voters:
                    self.sim.stats.transfers += 1
                    leader.replica.node.transfer_leadership(rng.choice(voters))
        elif kind in ("membership", "resize") and not self.sim.membership.busy and not self.damaged():
            if kind == "resize":
                self.sim.spawn_harness(self.sim.membership.resize())
            elif len(members) > 1:
                self.sim.spawn_harness(self.sim.membership.replace(rng.choice(members).id))
        elif kind == "skew" and live:
            node = rng.choice(live)
            node.tick_interval = self.sim.tick * rng.uniform(0.7, 1.4)
            if node.replica is not None:
                node.replica.node.tick_interval = node.tick_interval

    def cut_off(self, side: set[int], ids: list[int], ticks: tuple[float, float] = (10, 70)) -> None:
        """A two-sided partition: `side` from everyone else."""
        self.cut({(a, b) for a in ids for b in ids if (a in side) != (b in side)}, ticks)

    def cut(self, pairs: set[tuple[int, int]], ticks: tuple[float, float] = (10, 70)) -> None:
        self.sim.stats.partitions += 1
        self.sim.network.cut |= pairs
        self.sim.loop.call_later(self.sim.rng.uniform(*ticks) * self.sim.tick, self.heal_pairs, pairs)

    def heal_pairs(self, pairs: set[tuple[int, int]]) -> None:
        self.sim.network.cut -= pairs

    def heal(self) -> None:
        self.sim.heal_time = self.sim.loop.time()
        self.sim.network.cut.clear()
        self.sim.network.faults.loss = 0.0
        for node in self.sim.members():
            node.slow_disk_until = 0.0
            node.crash_on_snapshot_install = False
            node.fs.disarm()
            if not node.alive and not node.restart_pending:
                self.sim.boot(node)

    def configuration_settled(self) -> bool:
        """At least three voters, and every live member applied the leader's configuration
        (else some still count votes in an older one, whose majority a lost disk may break)."""
        leader = self.sim.leader()
        if leader is None or leader.replica is None:
            return False
        try:
            conf = leader.replica.node.status().conf
            return len(conf.voters) >= 3 and all(
                n.replica.node.status().conf == conf for n in self.sim.members() if n.alive and n.replica is not None
            )
        except RaftError:  # a replica whose loop just failed
            return False

    def damaged(self) -> bool:
        return any((n.damaged or n.corrupted) and not n.removed for n in self.sim.nodes.values())

    def corrupt_a_log(self) -> None:
        """Flip a bit in the length of a record in the middle of a log at rest (the replica
        is stopped first): it must refuse to start, never start without what follows."""
        if self.sim.membership.busy or self.damaged() or not self.configuration_settled():
            return  # one lost disk at a time, and a majority of every configuration in use survives
        candidates = [n for n in self.sim.members() if n.durable is not None and n.incarnation > 0]
        if not candidates:
            return
        node = self.sim.rng.choice(candidates)
        if node.alive:
            self.sim.stop_node(node, False)
        records = []
        for path, data in node.fs.files_at_rest(self.sim.data / DATA_WAL).items():
            pos = 0
            while pos + HEADER_BYTES <= len(data):
                (length,) = struct.unpack_from("<I", data, pos)
                if pos + HEADER_BYTES + length > len(data):
                    break
                records.append((path, pos))
                pos += HEADER_BYTES + length
        if len(records) < 3:
            return
        path, pos = self.sim.rng.choice(records[:-2])  # never the last: that one may pass for torn
        node.fs.flip_bit(path, pos + 2, self.sim.rng.randrange(8))  # the length's third byte: far past the end
        node.corrupted = True
        self.sim.stats.corruptions += 1

    def churn(self, old_voters: list[int]) -> None:
        """Right after the group grew, two of its old members are cut off together and one
        of them reboots: it must come back knowing the group it is in now."""
        if self.sim.heal_time:
            return  # the growth finished after the faults were healed: no more faults
        live = [n for n in old_voters if self.sim.nodes[n].alive]
        if len(live) < 2:
            return
        node, peer = self.sim.rng.sample(live, 2)
        self.cut_off({node, peer}, [n.id for n in self.sim.members()], (60, 150))
        self.sim.stop_node(
            self.sim.nodes[node], self.sim.rng.random() < 0.5, restart_in=self.sim.rng.uniform(1, 5) * self.sim.tick
        )
