"""A deterministic asyncio event loop with virtual time, for the simulator.

The production code (RaftNode, the RPC client, the replica's coroutines) runs on it
unchanged. Time moves only when nothing is ready: the loop jumps straight to the next timer,
so a simulated minute takes as long as the work in it. The order in which ready callbacks
run is shuffled by the seed each round, so one seed explores one interleaving and replays
it exactly.

Tasks are labelled with the simulated node they belong to (a context variable, inherited by
every task a node's code creates), so a crash can cancel exactly that node's tasks.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import random
import weakref
from collections.abc import Coroutine, Generator
from typing import Any

# The simulated node (node id, incarnation) whose code is running; None for the harness.
current_node: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("sim_node", default=None)


class Deadlock(RuntimeError):
    """Nothing is ready and nothing is scheduled, yet the run is not finished."""


class _VirtualSelector:
    """Stands in for the OS selector: waiting `timeout` seconds means moving the clock."""

    def __init__(self, loop: SimLoop) -> None:
        self._loop = loop

    def select(self, timeout: float | None) -> list[Any]:
        loop = self._loop
        if loop._ready:
            loop.shuffle_ready()
        elif timeout is None:
            raise Deadlock("the simulation has nothing left to run")
        elif timeout > 0:
            loop.now += timeout
        return []

    def close(self) -> None:
        pass


class SimLoop(asyncio.BaseEventLoop):
    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.rng = rng
        self.now = 0.0
        self._selector = _VirtualSelector(self)
        self._clock_resolution = 1e-9
        self.tasks_of: dict[tuple[int, int], weakref.WeakSet[asyncio.Task[Any]]] = {}
        self.set_task_factory(self._make_task)

    _ready: collections.deque[asyncio.Handle]  # BaseEventLoop's queue of ready callbacks

    def time(self) -> float:
        return self.now

    def shuffle_ready(self) -> None:
        ready = self._ready
        if len(ready) > 1:
            items = list(ready)
            self.rng.shuffle(items)
            ready.clear()
            ready.extend(items)

    def _make_task(
        self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any] | Generator[Any, None, Any], **kwargs: Any
    ) -> asyncio.Task[Any]:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        owner = (kwargs.get("context") or contextvars.copy_context()).get(current_node)
        if owner is not None:
            self.tasks_of.setdefault(owner, weakref.WeakSet()).add(task)
        return task

    def cancel_node(self, owner: tuple[int, int]) -> None:
        """Cancel every task a node's incarnation started: its process died."""
        for task in list(self.tasks_of.pop(owner, ())):
            task.cancel()

    # Hooks BaseEventLoop leaves to its subclasses; nothing here does real I/O.
    def _process_events(self, event_list: list[Any]) -> None:
        pass

    def _write_to_self(self) -> None:
        pass
