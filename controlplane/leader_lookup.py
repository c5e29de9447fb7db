"""The leader as a process's clients know it. Callers that need it at the same moment share one
lookup: 64 clients starting together, or all of them after a failover, each asking every
replica on their own kept a slow machine's replicas so busy answering status that no lookup
finished within its timeout (measured: `bench.compare` W1 set-up, 2 runs of 3)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from controlplane.leader_client import RetryElsewhere

Leader = TypeVar("Leader")

# A shared lookup outlives any one caller's shorter wait (seconds).
FIND_LEADER_TIMEOUT = 15.0


class LeaderLookup(Generic[Leader]):
    def __init__(self, find: Callable[[float], Awaitable[Leader]], min_timeout: float = FIND_LEADER_TIMEOUT) -> None:
        """find(timeout): the leader, or an exception (TimeoutError when none is found in time)."""
        self._find = find
        self._min_timeout = min_timeout
        self.known: Leader | None = None
        self._finding: asyncio.Future[Leader] | None = None

    async def leader(self, timeout: float) -> Leader:
        """The known leader, or the one the running lookup finds (starting it if none runs).
        RetryElsewhere when none is found within `timeout`; the lookup's own errors as they are."""
        if self.known is not None:
            return self.known
        if self._finding is None:
            self._finding = asyncio.ensure_future(self._find(max(timeout, self._min_timeout)))
            self._finding.add_done_callback(self._found)
        try:
            return await asyncio.wait_for(asyncio.shield(self._finding), timeout)
        except TimeoutError as exc:
            raise RetryElsewhere(f"no leader found within {timeout}s: {exc}") from exc

    def _found(self, lookup: asyncio.Future[Leader]) -> None:
        self._finding = None
        if not lookup.cancelled() and lookup.exception() is None:  # the exception, retrieved
            self.known = lookup.result()

    def lost(self, leader: Leader | None = None) -> None:
        """`leader` did not answer as the leader: forget it, unless a lookup since has found
        another (a late report of the old one must not send everyone looking again). None:
        forget whichever is known."""
        if leader is None or leader == self.known:
            self.known = None

    def close(self) -> None:
        if self._finding is not None:
            self._finding.cancel()
