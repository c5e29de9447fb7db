"""SDK clients that write and read a few UAVs' `alt` as registers under faults, recording a
history for the linearizability checker (controlplane/sim/linearizability.py): each write's
value is unique (client n writes n * 1,000,000 + k as alt = value / 1000 m, within alt's
range for up to 9 clients), an operation without an answer stays open (outcome unknown), and
only definite answers close it. Shared by the chaos campaigns on Ray (tests/chaos) and on
namespace stations (bench/netns_chaos.py)."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import ray

from controlplane.client import ControlPlane, ControlPlaneError
from controlplane.session import UNKNOWN, outcome
from controlplane.sim.linearizability import Operation

KEYS = [f"c{i}" for i in range(4)]


def first_value(n: int) -> int:
    """Client n's values are n * 1,000,000 + k: unique across clients 1..9."""
    if not 1 <= n <= 9:
        raise ValueError(f"client numbers are 1..9 (alt's range), got {n}")
    return n * 1_000_000


def alt_of(value: int) -> float:
    return value / 1000


def value_of(alt: float) -> int:
    return round(alt * 1000)


@dataclass
class History:
    ops: list[Operation] = field(default_factory=list)
    done_at: list[float] = field(default_factory=list)  # when each acknowledged operation returned

    def acknowledged(self) -> list[Operation]:
        return [op for op in self.ops if op.completed]

    def longest_gap(self, start: float, end: float) -> tuple[float, float]:
        """The longest time in [start, end] without an acknowledged operation, and when it
        began (seconds after `start`)."""
        times = [start, *(t for t in sorted(self.done_at) if start < t < end), end]
        return max(((b - a, a - start) for a, b in itertools.pairwise(times)), default=(0.0, 0.0))


async def register_keys(cp: ControlPlane, station: str, keys: list[str] = KEYS) -> None:
    await cp.command({"type": "register_station", "station": station})
    for key in keys:
        await cp.command({"type": "register_uav", "uav": key, "home_station": station, "alt": 0})


async def sdk_client(
    n: int,
    make_client: Callable[[], ControlPlane],
    history: History,
    stop: asyncio.Event,
    keys: list[str] = KEYS,
    timeout: float = 5.0,
) -> None:
    """Half writes (a value unique to this client), half linearizable reads, until `stop`
    (n: 1..9).
    After a few operations in a row without an answer the client is made again (the group's
    members may have changed under it)."""
    value = first_value(n)
    cp = make_client()
    rng = random.Random(n)
    unanswered = 0
    while not stop.is_set():
        if unanswered >= 3:
            cp, unanswered = make_client(), 0
        key = rng.choice(keys)
        call = time.monotonic()
        try:
            if rng.random() < 0.5:
                value += 1
                op = Operation(n, key, "write", value, call)
                history.ops.append(op)
                answer = await cp.command({"type": "update_uav", "uav": key, "alt": alt_of(value)}, timeout=timeout)
                if outcome(answer) == UNKNOWN:
                    continue  # an expired session: may or may not have applied
                if not answer["ok"]:
                    raise AssertionError(f"a register write was refused: {answer}")
            else:
                op = Operation(n, key, "read", None, call)
                history.ops.append(op)
                op.value = value_of((await cp.query("uav", {"id": key}, timeout=timeout))["alt"])
        except (ControlPlaneError, ray.exceptions.RayError, TimeoutError):
            unanswered += 1
            await asyncio.sleep(0.05)  # no answer: outcome unknown, ret stays infinite
            continue
        unanswered = 0
        op.ret = time.monotonic()
        history.done_at.append(op.ret)
