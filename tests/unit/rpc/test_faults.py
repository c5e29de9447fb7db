"""Fault injection: plans parse with clear errors, partitions and drops and delays act on
the wrapped transport, and nothing changes when no plan is configured."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from controlplane.rpc.errors import RPCConnectionError, RPCTimeoutError
from controlplane.rpc.faults import FaultPlan, FaultyTransport, PlanSource, parse_plan, with_faults


class Recorder:
    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        self.sent.append((address, timeout))
        return 0

    async def close(self) -> None:
        pass


def test_plans_parse_and_bad_ones_say_why():
    plan = parse_plan("drop=0.25; delay=5-20\npartition=1|2,3")
    assert plan.drop == 0.25 and plan.delay_ms == (5.0, 20.0)
    assert plan.reachable(2, 3) and not plan.reachable(1, 2) and not plan.reachable(3, 1)
    assert parse_plan("isolate=2").reachable(1, 3) and not parse_plan("isolate=2").reachable(1, 2)
    assert parse_plan("") == FaultPlan()
    for bad, words in [("drop=2", "probability"), ("delay=9-1", "LOW-HIGH"), ("jitter=3", "not one of"),
                       ("partition=a|b", "fault plan")]:  # fmt: skip
        with pytest.raises(ValueError, match=words):
            parse_plan(bad)


def test_faulty_transport_partitions_drops_and_delays():
    async def go():
        inner = Recorder()
        rolls = itertools.cycle([0.1, 0.9])
        faulty = FaultyTransport(inner, 1, PlanSource(parse_plan("drop=0.5; partition=1|2")), lambda: next(rolls))
        with pytest.raises(RPCConnectionError, match="partition"):
            await faulty.send("raft-g-2", b"x", 1.0)
        with pytest.raises(RPCConnectionError, match="drop"):
            await faulty.send("raft-g-3", b"x", 1.0)  # roll 0.1 < 0.5
        await faulty.send("raft-g-3", b"x", 1.0)  # roll 0.9: delivered
        assert inner.sent == [("raft-g-3", 1.0)] and faulty.injected == 2
        slow = FaultyTransport(inner, 1, PlanSource(parse_plan("delay=50-50")))
        await slow.send("raft-g-3", b"x", 1.0)
        assert 0.94 < inner.sent[-1][1] < 0.96  # what is left of the timeout after the delay
        with pytest.raises(RPCTimeoutError):
            await FaultyTransport(inner, 1, PlanSource(parse_plan("delay=80-80"))).send("raft-g-3", b"x", 0.05)

    asyncio.run(go())


def test_a_plan_file_is_reread_when_it_changes(tmp_path):
    async def go():
        plan = tmp_path / "plan"
        inner = Recorder()
        faulty = with_faults(inner, 1, {"UAV_FAULTS_FILE": str(plan)})
        await faulty.send("raft-g-2", b"x", 1.0)  # no file yet: no faults
        plan.write_text("isolate=1")
        with pytest.raises(RPCConnectionError):
            await faulty.send("raft-g-2", b"x", 1.0)
        plan.unlink()
        await faulty.send("raft-g-2", b"x", 1.0)
        assert len(inner.sent) == 2

    asyncio.run(go())
    assert with_faults(Recorder(), 1, {}).__class__ is Recorder  # off by default


def test_a_disk_error_fires_once_per_change_of_the_plan_file_after_the_replica_started(tmp_path):
    import os
    import time

    from controlplane.persist.faults import FaultyStorage, with_disk_faults
    from controlplane.raft.messages import Entry, Ready, Role
    from controlplane.raft.storage import MemoryStorage

    assert parse_plan("disk_error=2,3").disk_errors == {2, 3}
    plan = tmp_path / "plan"
    plan.write_text("disk_error=2")
    old = time.time_ns() - 10**9
    os.utime(plan, ns=(old, old))  # written before this replica started: not for it
    storage = with_disk_faults(MemoryStorage(), 2, {"UAV_FAULTS_FILE": str(plan)})
    assert isinstance(storage, FaultyStorage)
    ready = Ready(None, (Entry(1, 1, b"x"),), None, (), (), (), 0, Role.FOLLOWER, 1)
    storage.persist(ready)  # the plan predates the process: no fault
    plan.write_text("disk_error=2 ")
    with pytest.raises(OSError, match="injected disk error"):
        storage.persist(ready)
    storage.persist(ready)  # once per change
    assert with_disk_faults(MemoryStorage(), 2, {}).__class__ is MemoryStorage
