"""Node names as the specification writes them (`node_1`) and the Raft ids they stand for."""

from __future__ import annotations

import hashlib
import re

_SPEC_NAME = re.compile(r"node_([1-9][0-9]{0,8})")


def raft_id_of(name: str) -> int:
    """The Raft id of a node named as the specification names them: `node_<n>` is n; any
    other name gets a stable id above 2^32 from its hash, so every node computes the same
    id for the same name without asking anyone (ids stay below 2^53: exact in JSON)."""
    match = _SPEC_NAME.fullmatch(name)
    if match:
        return int(match.group(1))
    digest = int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")
    return (1 << 32) + digest % (1 << 48)
