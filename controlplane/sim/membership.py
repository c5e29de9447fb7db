"""Membership changes in the simulator, driven one at a time through whoever leads, as the
controller does: a member replaced by a fresh one (a station lost with its disk, add-first
or remove-first), a group grown by two stations or shrunk by two."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from controlplane.raft.core import RaftError
from controlplane.replica import Replica
from controlplane.sim.clients import Unreachable

if TYPE_CHECKING:
    from controlplane.sim.world import Simulation


class Membership:
    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.busy = False

    async def replace(self, victim_id: int) -> None:
        """A fresh member on a new station takes the place of `victim_id` (in either order:
        add first, or remove first)."""
        if self.busy:
            self.sim.loop.call_later(20 * self.sim.tick, self.sim.spawn_harness, self.replace(victim_id))
            return
        newcomer = self.new_member()
        add = [("add_learner", newcomer), ("add_voter", newcomer)]
        remove = [("remove", victim_id)]
        if await self.change(remove + add if self.sim.rng.random() < 0.4 else add + remove):
            self.sim.stats.replaced += 1

    async def resize(self) -> None:
        """Grow a group of three by two stations, or shrink a larger one by two."""
        leader = self.sim.leader()
        if leader is None or leader.replica is None:
            return
        voters = sorted(leader.replica.node.status().conf.voters)
        if len(voters) > 3:
            await self.change([("remove", victim) for victim in self.sim.rng.sample(voters, 2)])
        elif await self.grow(2) and self.sim.rng.random() < 0.7:
            self.sim.faults.churn(voters)

    async def grow(self, count: int) -> bool:
        steps = []
        for _ in range(count):
            newcomer = self.new_member()
            steps += [("add_learner", newcomer), ("add_voter", newcomer)]
        return await self.change(steps)

    def new_member(self) -> int:
        node = self.sim.add_node(self.sim.next_id, founder=False)
        self.sim.next_id += 1
        self.sim.boot(node)
        return node.id

    async def change(self, steps: list[tuple[str, int]]) -> bool:
        """Drive one change at a time through whoever leads, as the controller does."""
        if self.busy:
            return False
        self.busy = True
        try:
            for op, target in steps:
                if not await self.step(op, target):
                    return False  # out of time; the group carries on with what committed
                if op == "remove":
                    victim = self.sim.nodes[target]
                    victim.removed = True  # the station is gone, disk and all
                    if victim.alive:
                        self.sim.stop_node(victim, True)
            return True
        finally:
            self.busy = False

    async def step(self, op: str, target: int) -> bool:
        loop = self.sim.loop
        deadline = loop.time() + 300 * self.sim.tick
        while loop.time() < deadline:
            leader = self.sim.leader()
            if leader is None or leader.replica is None:
                await asyncio.sleep(5 * self.sim.tick)
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
                await asyncio.sleep(5 * self.sim.tick)  # promote only a learner that caught up
                continue
            try:
                await self.sim.gateway.call(leader.id, _changing(op, target, 20 * self.sim.tick), self.sim.call_timeout)
                self.sim.stats.conf_changes += 1
            except (Unreachable, RaftError, TimeoutError, ValueError):
                await asyncio.sleep(5 * self.sim.tick)
        return False


def _changing(op: str, target: int, timeout: float) -> Callable[[Replica], Coroutine[Any, Any, Any]]:
    return lambda replica: replica.change_membership(op, target, timeout)
