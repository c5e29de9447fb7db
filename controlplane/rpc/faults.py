"""Fault injection for chaos runs: a Transport wrapper that drops, delays or partitions a
replica's outgoing RPCs. Off unless configured — by environment, because module globals
do not reach Ray's actor processes:

    UAV_FAULTS="drop=0.05; delay=5-20; partition=1|2,3"     a fixed plan
    UAV_FAULTS_FILE=/path/plan                                a plan re-read when the file changes

`drop` is the chance an attempt fails as a lost connection; `delay` a uniform delay in
milliseconds before each attempt (beyond the attempt's timeout it becomes a timeout);
`partition` splits replica ids into groups that cannot reach each other (`isolate=2` is
`partition=2|<everyone else>`). `disk_error=2` makes replica 2's next fsync fail with EIO
(persist/faults.py; from a plan file only, once per change of the file after the replica
started, so a replica restarted from its disk is not failed again). An empty plan (or file)
means no faults.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from controlplane.rpc.errors import RPCConnectionError, RPCTimeoutError
from controlplane.rpc.transport import Transport


@dataclass(frozen=True)
class FaultPlan:
    drop: float = 0.0
    delay_ms: tuple[float, float] = (0.0, 0.0)
    groups: tuple[frozenset[int], ...] = ()  # partition: who can reach whom
    isolated: frozenset[int] = field(default_factory=frozenset)
    disk_errors: frozenset[int] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if not 0.0 <= self.drop <= 1.0:
            raise ValueError(f"drop must be a probability in [0, 1], got {self.drop}")
        lo, hi = self.delay_ms
        if not 0 <= lo <= hi:
            raise ValueError(f"delay must be LOW-HIGH milliseconds with 0 <= LOW <= HIGH, got {lo}-{hi}")

    def reachable(self, source: int, target: int | None) -> bool:
        if target is None or source == target:
            return True
        if source in self.isolated or target in self.isolated:
            return False
        group_of = {n: i for i, g in enumerate(self.groups) for n in g}
        return group_of.get(source, -1) == group_of.get(target, -1) or source not in group_of or target not in group_of


def parse_plan(text: str) -> FaultPlan:
    """'drop=0.1; delay=5-20; partition=1|2,3; isolate=2' (any subset, any order)."""
    values: dict[str, str] = {}
    for part in text.replace("\n", ";").split(";"):
        part = part.strip()
        if not part or part.startswith("#"):
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("drop", "delay", "partition", "isolate", "disk_error"):
            raise ValueError(
                f"fault plan: {part!r} is not one of drop=P, delay=LOW-HIGH, partition=A|B, isolate=N, disk_error=N"
            )
        values[key] = value.strip()
    try:
        drop = float(values.get("drop", "0"))
        low, _, high = values.get("delay", "0").partition("-")
        delay = (float(low), float(high or low))
        groups = tuple(
            frozenset(int(n) for n in group.split(",") if n.strip())
            for group in values.get("partition", "").split("|")
            if group.strip()
        )
        isolated = frozenset(int(n) for n in values.get("isolate", "").split(",") if n.strip())
        disk_errors = frozenset(int(n) for n in values.get("disk_error", "").split(",") if n.strip())
    except ValueError as exc:
        raise ValueError(f"fault plan {text!r}: {exc}") from None
    return FaultPlan(drop, delay, groups if len(groups) > 1 else (), isolated, disk_errors)


def target_id(address: str) -> int | None:
    """Replica id from an address like 'raft-fleet-2' (actor names); None if it has none."""
    tail = address.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else None


class PlanSource:
    """The current plan: fixed (UAV_FAULTS) or from a file re-read when it changes."""

    def __init__(self, plan: FaultPlan | None = None, path: Path | None = None) -> None:
        self._plan = plan or FaultPlan()
        self._path = path
        self._mtime: tuple[int, int] | None = None

    @property
    def changed_at_ns(self) -> int:
        """When the plan file last changed (0 for a fixed plan or no file)."""
        self.current()
        return self._mtime[0] if self._mtime is not None else 0

    def current(self) -> FaultPlan:
        if self._path is not None:
            try:
                stat = self._path.stat()
                mtime = (stat.st_mtime_ns, stat.st_size)
            except FileNotFoundError:
                self._plan, self._mtime = FaultPlan(), None
                return self._plan
            if mtime != self._mtime:
                self._plan, self._mtime = parse_plan(self._path.read_text()), mtime
        return self._plan


class FaultyTransport:
    def __init__(
        self, inner: Transport, source: int, plans: PlanSource, rng: Callable[[], float] = random.random
    ) -> None:
        self.inner = inner
        self.source = source
        self.plans = plans
        self._random = rng
        self.injected = 0

    async def send(self, address: str, body: bytes, timeout: float) -> int:
        plan = self.plans.current()
        if not plan.reachable(self.source, target_id(address)):
            self.injected += 1
            raise RPCConnectionError(f"injected partition: {self.source} cannot reach {address}")
        if plan.drop and self._random() < plan.drop:
            self.injected += 1
            raise RPCConnectionError(f"injected drop to {address}")
        lo, hi = plan.delay_ms
        delay = (lo + (hi - lo) * self._random()) / 1000 if hi > 0 else 0.0
        if delay >= timeout:
            await asyncio.sleep(timeout)
            self.injected += 1
            raise RPCTimeoutError(f"injected delay {delay * 1000:.0f} ms to {address}")
        if delay:
            await asyncio.sleep(delay)
        return await self.inner.send(address, body, timeout - delay)

    async def close(self) -> None:
        await self.inner.close()


def with_faults(inner: Transport, source: int, env: Mapping[str, str] | None = None) -> Transport:
    """`inner` wrapped when UAV_FAULTS or UAV_FAULTS_FILE is set; `inner` itself otherwise."""
    env = os.environ if env is None else env
    if env.get("UAV_FAULTS_FILE"):
        return FaultyTransport(inner, source, PlanSource(path=Path(env["UAV_FAULTS_FILE"])))
    if env.get("UAV_FAULTS"):
        return FaultyTransport(inner, source, PlanSource(parse_plan(env["UAV_FAULTS"])))
    return inner
