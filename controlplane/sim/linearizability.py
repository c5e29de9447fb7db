"""A linearizability checker for register histories (Wing & Gong's search with Lowe's
memoisation, as Porcupine does), run per key: a history of independent registers is
linearizable iff each key's sub-history is (Herlihy & Wing's locality).

An operation whose outcome the client never learned (it timed out) has no return time: it
may have taken effect at any point after its call, or never. Such reads constrain nothing
and are dropped.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass


@dataclass
class Operation:
    client: int
    key: str
    kind: str  # "write" or "read"
    value: int | None  # the value written, or the value a read returned
    call: float
    ret: float = math.inf  # math.inf: outcome unknown

    @property
    def completed(self) -> bool:
        return self.ret != math.inf


@dataclass(frozen=True)
class CheckResult:
    ok: bool
    failing_key: str | None = None
    explored: int = 0


def check_history(ops: list[Operation], *, initial: int | None = None, budget: int = 2_000_000) -> CheckResult:
    by_key: dict[str, list[Operation]] = defaultdict(list)
    for op in ops:
        if op.kind not in ("write", "read"):
            raise ValueError(f"unknown operation kind {op.kind!r}")
        if op.kind == "read" and not op.completed:
            continue
        if op.ret < op.call:
            raise ValueError(f"operation returns before it is called: {op}")
        by_key[op.key].append(op)
    for key, key_ops in by_key.items():
        by_key[key] = _settle_unknown_writes(key_ops)
    explored = 0
    for key in sorted(by_key):
        ok, n = _check_register(by_key[key], initial, budget)
        explored += n
        if not ok:
            return CheckResult(False, key, explored)
    return CheckResult(True, None, explored)


def _settle_unknown_writes(ops: list[Operation]) -> list[Operation]:
    """Writes of unknown outcome, when every write's value is unique (as the simulator's
    are): one no read returned may be taken as never having happened (it could only have
    been overwritten unseen), and one a read returned took effect before that read returned.
    Both keep exactly the linearizations there were, without endless pending operations."""
    writes = [op for op in ops if op.kind == "write"]
    if len({op.value for op in writes}) != len(writes):
        return ops  # values repeat: the shortcut does not hold
    first_read: dict[int | None, float] = {}
    for op in ops:
        if op.kind == "read" and op.ret < first_read.get(op.value, math.inf):
            first_read[op.value] = op.ret
    settled = []
    for op in ops:
        if op.kind == "write" and not op.completed:
            seen_by = first_read.get(op.value)
            if seen_by is None:
                continue
            op = Operation(op.client, op.key, op.kind, op.value, op.call, max(op.call, seen_by))
        settled.append(op)
    return settled


def _check_register(ops: list[Operation], initial: int | None, budget: int) -> tuple[bool, int]:
    ops = sorted(ops, key=lambda o: (o.call, o.ret))
    n = len(ops)
    required = 0
    for i, op in enumerate(ops):
        if op.completed:
            required |= 1 << i
    seen: set[tuple[int, int | None]] = set()
    explored = 0
    # Depth-first over "which operation is linearized next"; the stack holds (done, value).
    stack: list[tuple[int, int | None]] = [(0, initial)]
    while stack:
        done, value = stack.pop()
        if done & required == required:
            return True, explored
        if (done, value) in seen:
            continue
        seen.add((done, value))
        explored += 1
        if explored > budget:
            raise RuntimeError(f"linearizability search exceeded {budget} states")
        # Only an operation called before every pending operation's return may go next.
        # Operations are in call order: scan from the first pending one until they are called
        # after the earliest return seen (no later one can return earlier than that).
        candidates, horizon = [], math.inf
        i = (~done & (done + 1)).bit_length() - 1  # the first pending operation
        while i < n and ops[i].call < horizon:
            if not done >> i & 1:
                candidates.append(i)
                horizon = min(horizon, ops[i].ret)
            i += 1
        for i in candidates:
            op = ops[i]
            if op.call >= horizon and op.ret != horizon:
                continue  # some pending operation returned before this one was called
            if op.kind == "write":
                stack.append((done | 1 << i, op.value))
            elif op.value == value:
                stack.append((done | 1 << i, value))
    return False, explored
