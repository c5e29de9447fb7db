import asyncio

import pytest

from controlplane.leader_client import OutcomeUnknown, RetryElsewhere
from controlplane.leader_lookup import LeaderLookup


class Finder:
    """A lookup whose answer the test gives when it chooses."""

    def __init__(self) -> None:
        self.calls: list[float] = []
        self.answers: asyncio.Queue[object] = asyncio.Queue()

    async def __call__(self, timeout: float) -> str:
        self.calls.append(timeout)
        answer = await self.answers.get()
        if isinstance(answer, BaseException):
            raise answer
        return str(answer)


def test_callers_at_the_same_moment_share_one_lookup():
    async def go():
        finder = Finder()
        lookup = LeaderLookup(finder, min_timeout=15.0)
        waiting = [asyncio.create_task(lookup.leader(5.0)) for _ in range(50)]
        await asyncio.sleep(0)
        finder.answers.put_nowait("n2")
        assert await asyncio.gather(*waiting) == ["n2"] * 50
        assert len(finder.calls) == 1 and finder.calls[0] == 15.0  # outlives a caller's shorter wait
        assert await lookup.leader(5.0) == "n2" and len(finder.calls) == 1  # known: no lookup

    asyncio.run(go())


def test_a_caller_that_gives_up_leaves_the_lookup_running_for_the_next():
    async def go():
        finder = Finder()
        lookup = LeaderLookup(finder)
        with pytest.raises(RetryElsewhere, match=r"no leader found within 0\.01s"):
            await lookup.leader(0.01)
        later = asyncio.create_task(lookup.leader(5.0))
        await asyncio.sleep(0)
        finder.answers.put_nowait("n1")
        assert await later == "n1"
        assert len(finder.calls) == 1

    asyncio.run(go())


def test_a_failed_lookup_reaches_every_waiter_and_the_next_call_looks_again():
    async def go():
        finder = Finder()
        lookup = LeaderLookup(finder)
        waiting = [asyncio.create_task(lookup.leader(5.0)) for _ in range(3)]
        await asyncio.sleep(0)
        finder.answers.put_nowait(TimeoutError("no leader among [1, 2, 3]"))
        for result in await asyncio.gather(*waiting, return_exceptions=True):
            assert isinstance(result, RetryElsewhere) and "no leader among" in str(result)
        finder.answers.put_nowait(ValueError("a wrong token"))  # not a timeout: as it is
        with pytest.raises(ValueError, match="a wrong token"):
            await lookup.leader(5.0)
        finder.answers.put_nowait("n3")
        assert await lookup.leader(5.0) == "n3"
        assert len(finder.calls) == 3

    asyncio.run(go())


def test_a_late_report_of_the_old_leader_keeps_the_new_one():
    async def go():
        finder = Finder()
        lookup = LeaderLookup(finder)
        finder.answers.put_nowait("n1")
        assert await lookup.leader(1.0) == "n1"
        lookup.lost("n1")
        finder.answers.put_nowait("n2")
        assert await lookup.leader(1.0) == "n2"
        lookup.lost("n1")  # a client whose try at n1 failed before the lookup found n2
        assert lookup.known == "n2"
        lookup.lost()  # forget whichever is known
        assert lookup.known is None

    asyncio.run(go())


class FollowerHandle:
    """A replica actor's handle, as find_leader calls it, that never leads."""

    def __init__(self, replica: int) -> None:
        self.replica = replica
        self.status = self

    def remote(self):
        async def answer():
            return {"replica": self.replica, "role": "follower"}

        return answer()


def test_an_sdk_command_with_no_leader_to_be_found_is_reported_unknown():
    from controlplane.client import ControlPlane

    async def go():
        cp = ControlPlane("leaderless", {1: FollowerHandle(1), 2: FollowerHandle(2)})
        with pytest.raises(OutcomeUnknown, match="may or may not have been applied"):
            await cp.propose(b'{"type": "register_station", "station": "s"}', timeout=0.5)

    asyncio.run(go())
