"""Whether a founder whose data directory is empty may bootstrap, from what its peers say.

An empty directory looks the same on a founder's first start and on its return without its
disk. Only the second is dangerous: it may have voted or acknowledged entries that counted
in a commit, and voting again with a blank log can undo them. Every node keeps the peers it
has had a message from (RaftNode.receive, durable before the message counts), so the peers
can tell: one that has heard from this node is proof it took part. The node that counted
its answers may be the one that is down, though, so while the group has run (a term past 1)
every peer must answer before the founder may bootstrap.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class PeerAnswer:
    term: int
    peers_heard: frozenset[int]


def why_it_may_have_taken_part(node_id: int, answers: Mapping[str, PeerAnswer | None]) -> str | None:
    """None when founder `node_id` may bootstrap; otherwise why not. `answers` has every other
    founder, by name: what it said, or None when it did not answer."""
    heard_by = sorted(name for name, a in answers.items() if a is not None and node_id in a.peers_heard)
    if heard_by:
        return f"{', '.join(heard_by)} {'has' if len(heard_by) == 1 else 'have'} had messages from it"
    ran = sorted(name for name, a in answers.items() if a is not None and a.term > 1)
    silent = sorted(name for name, a in answers.items() if a is None)
    if ran and silent:
        return (
            f"{ran[0]} shows the group has run and {', '.join(silent)} did not answer, so whether it "
            "took part cannot be told (start it again once every founder answers)"
        )
    return None
