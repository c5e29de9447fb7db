"""Whether a founder whose data directory is empty may bootstrap, from what its peers say.

An empty directory looks the same on a founder's first start and on its return without its
disk. Only the second is dangerous: it may have voted or acknowledged entries that counted
in a commit, and voting again with a blank log can undo them. Every node keeps the peers it
has had a message from (RaftNode.receive, durable before the message counts), so the peers
can tell: one that has heard from this node is proof it took part. The node that counted
its answers may be the one that is down, though, so while the group has run (a term past 1)
every peer must answer before the founder may bootstrap. A silent peer may be restarting:
`ask_until_sure` asks again for a while before it refuses for silence alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)
PATIENCE = 10.0  # seconds a founder keeps asking silent peers before it refuses for their silence


@dataclass(frozen=True)
class PeerAnswer:
    term: int
    peers_heard: frozenset[int]


def why_it_may_have_taken_part(node_id: int, answers: Mapping[str, PeerAnswer | None]) -> str | None:
    """None when founder `node_id` may bootstrap; otherwise why not. `answers` has every other
    founder, by name: what it said, or None when it did not answer."""
    heard_by = _heard_from_it(node_id, answers)
    if heard_by:
        return f"{', '.join(heard_by)} {'has' if len(heard_by) == 1 else 'have'} had messages from it"
    ran = sorted(name for name, a in answers.items() if a is not None and a.term > 1)
    silent = _silent(answers)
    if ran and silent:
        return (
            f"{ran[0]} shows the group has run and {', '.join(silent)} did not answer, so whether it "
            "took part cannot be told (start it again once every founder answers)"
        )
    return None


def _heard_from_it(node_id: int, answers: Mapping[str, PeerAnswer | None]) -> list[str]:
    return sorted(name for name, a in answers.items() if a is not None and node_id in a.peers_heard)


def _silent(answers: Mapping[str, PeerAnswer | None]) -> list[str]:
    return sorted(name for name, a in answers.items() if a is None)


async def ask_until_sure(
    node_id: int,
    ask: Callable[[], Awaitable[Mapping[str, PeerAnswer | None]]],
    patience: float = PATIENCE,
    pause: float = 0.5,
) -> str | None:
    """why_it_may_have_taken_part over the answers `ask` gathers, asked again every `pause`
    seconds for up to `patience` while only a silent peer stands in the way."""
    deadline = time.monotonic() + patience
    while True:
        answers = await ask()
        reason = why_it_may_have_taken_part(node_id, answers)
        if reason is None or _heard_from_it(node_id, answers) or time.monotonic() >= deadline:
            return reason
        log.info("founder %d: waiting for %s to answer before bootstrapping", node_id, ", ".join(_silent(answers)))
        await asyncio.sleep(pause)
