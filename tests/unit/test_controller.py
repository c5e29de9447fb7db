"""The reconcile loop's lost-disk question, with stand-in replica handles (no Ray cluster)."""

import asyncio

import ray

from controlplane.actors import LostDiskError
from controlplane.controller import Controller
from controlplane.metrics.sink import MemorySink
from controlplane.placement.embedded import EmbeddedRegistry, EmbeddedServiceDiscovery
from controlplane.placement.planner import Station


class FixedStations:
    async def healthy_stations(self):
        return [Station(name, f"ray-{name}") for name in ("a", "b", "c")]


class Method:
    def __init__(self, answer):
        self.answer = answer

    def remote(self):
        return self.answer


class Handle:
    """Answers status() with the given future (an actor handle's call is awaitable)."""

    def __init__(self, answer):
        self.status = Method(answer)


def answered(value=None):
    future = asyncio.get_running_loop().create_future()
    future.set_result(value)
    return future


async def replica_2_silent():
    """A controller over three replicas placed on three stations; replica 2's status call
    answers when the test resolves the future returned."""
    store = EmbeddedServiceDiscovery(EmbeddedRegistry())
    controller = Controller("g", 3, "/nonexistent", store, stations=FixedStations(), grace=5, metrics=MemorySink())
    silent = asyncio.get_running_loop().create_future()
    controller.handles = {1: Handle(answered()), 2: Handle(silent), 3: Handle(answered())}
    placement, _ = await controller.planner.reconcile()
    return controller, placement, silent


def test_a_replica_that_does_not_answer_holds_up_no_pass_and_its_late_refusal_still_counts():
    async def go():
        controller, placement, silent = await replica_2_silent()

        # Replica 2 is slow to answer (its station lost but not yet noticed, say): the pass
        # goes on without its answer, well before the status call's own 5 s timeout.
        assert await asyncio.wait_for(controller.lost_disks(placement, set()), 3.0) == []

        # It answers later, refusing to serve: the next pass takes that answer.
        silent.set_exception(ray.exceptions.RayTaskError("status", "", LostDiskError("refusing to rejoin")))
        assert await asyncio.wait_for(controller.lost_disks(placement, set()), 3.0) == [2]
        controller.handles[2] = Handle(answered())
        assert await controller.lost_disks(placement, set()) == []  # asked again: it serves now

    asyncio.run(go())


def test_a_question_to_a_replica_that_is_moving_is_dropped():
    async def go():
        controller, placement, silent = await replica_2_silent()
        assert await controller.lost_disks(placement, set()) == []
        assert await controller.lost_disks(placement, {2}) == []
        assert silent.cancelled()  # its open question was dropped, not left to answer a stale pass

    asyncio.run(go())
