"""What one process asks one replica at the same moment goes in one actor call.

An actor call costs ~1-2 ms and a few hundred microseconds of CPU on each side, more than
applying a fleet command. So the SDK's clients in a process (each with its own session and
seq) share, per replica, a Coalescer (sync/coalescer.py) with no delay: a lone command goes
at once; commands that arrive while calls are in flight ride the next call together, and
the replica proposes them in one Raft round (`propose_many`) or reads them after one
ReadIndex barrier (`query_many`). Under load the batches grow by themselves."""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from controlplane.ray_group import answer_while_leading
from controlplane.sync.coalescer import Coalescer, CoalescerConfig

CALLS = CoalescerConfig(max_size=512, max_delay=0.0, max_in_flight=4)

Pending = tuple[Any, "asyncio.Future[Any]"]
_per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[str, Any, str], Coalescer[Pending]]] = (
    weakref.WeakKeyDictionary()
)


def _calls(kind: str, handle: Any, consistency: str, method: Any) -> Coalescer[Pending]:
    coalescers = _per_loop.setdefault(asyncio.get_running_loop(), {})
    key = (kind, handle, consistency)
    if key not in coalescers:

        async def send(items: list[Pending]) -> None:
            outcomes = await answer_while_leading(handle, method([item for item, _ in items]))
            for (_, fut), outcome in zip(items, outcomes, strict=True):
                if not fut.done():
                    fut.set_result(outcome)

        coalescers[key] = Coalescer(send, lambda _: 1, CALLS)
    return coalescers[key]


async def _call(coalescer: Coalescer[Pending], item: Any) -> Any:
    fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    await coalescer.submit((item, fut))
    return fut.result()


async def propose(handle: Any, command: bytes) -> tuple[str, Any]:
    """("ok", the state machine's answer) or ("retry", why): the replica did not apply it
    (not the leader, dropped by a newer term, timed out); resend with the same (client, seq).
    Raises what the call raised (the replica died, or stopped leading: TimeoutError)."""
    calls = _calls("propose", handle, "", lambda commands: handle.propose_many.remote(commands))
    outcome: tuple[str, Any] = await _call(calls, command)
    return outcome


async def query(handle: Any, name: str, args: dict[str, Any] | None, consistency: str) -> Any:
    """The query's answer; raises the query's own error (CommandError, NotFoundError) or the
    call's (not leader, timeout)."""
    calls = _calls("query", handle, consistency, lambda queries: handle.query_many.remote(queries, consistency))
    ok, value = await _call(calls, (name, args))
    if not ok:
        raise value
    return value


def sent_in_this_loop() -> dict[str, tuple[int, int]]:
    """{"propose" | "query": (actor calls, items in them)} sent from the running loop."""
    totals: dict[str, tuple[int, int]] = {}
    for (kind, _, _), coalescer in _per_loop.get(asyncio.get_running_loop(), {}).items():
        calls, items = totals.get(kind, (0, 0))
        totals[kind] = (calls + coalescer.batches_sent, items + coalescer.size_sent)
    return totals
