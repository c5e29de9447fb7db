"""find_leader against stand-in replica handles (anything whose status.remote() is awaitable)."""

import asyncio
import time

import pytest

from controlplane.actors import find_leader


class Replica:
    """Answers status as a follower until `leads_after` seconds have passed (then as leader);
    a silent replica (a dead or restarting actor) never answers."""

    def __init__(self, replica: int, leads_after: float | None = None, silent: bool = False) -> None:
        self.replica, self.leads_after, self.silent = replica, leads_after, silent
        self.started = time.monotonic()
        self.asked = 0
        self.status = self

    def remote(self):
        self.asked += 1
        return self._answer()

    async def _answer(self):
        if self.silent:
            await asyncio.sleep(3600)
        leads = self.leads_after is not None and time.monotonic() - self.started >= self.leads_after
        return {"replica": self.replica, "role": "leader" if leads else "follower"}


def test_an_election_is_noticed_without_waiting_out_a_silent_replica():
    async def go():
        replicas = {1: Replica(1, silent=True), 2: Replica(2, leads_after=0.4), 3: Replica(3)}
        started = time.monotonic()
        leader = await find_leader(replicas, timeout=10, ask_timeout=5.0)
        return leader, time.monotonic() - started, replicas

    leader, elapsed, replicas = asyncio.run(go())
    assert leader == 2
    assert elapsed < 2.0  # not one 5 s ask_timeout per round
    assert replicas[3].asked >= 3  # asked again every ~0.1 s during the election


def test_no_leader_at_all_is_a_timeout_naming_the_replicas():
    async def go():
        await find_leader({1: Replica(1), 2: Replica(2, silent=True)}, timeout=0.5, ask_timeout=0.2)

    with pytest.raises(TimeoutError, match=r"\[1, 2\]"):
        asyncio.run(go())
