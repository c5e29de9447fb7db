"""CPU time of processes by pid (from /proc), to say per operation where a benchmark's CPU
went: which process spent what, and how long each waited for a core."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_queue_wait_seconds(pid: int) -> float:
    """Seconds the threads of a process so far spent runnable but waiting for a core (the
    kernel's schedstat; threads that have ended no longer count)."""
    waited = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            waited += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):  # gone meanwhile, or no schedstat in this kernel
            continue
    return waited / 1e9


def pids_named(name: str) -> list[int]:
    """Processes whose command name (/proc/PID/comm) is `name`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:  # gone meanwhile
                continue
    return found


class CpuMeter:
    """CPU spent by each named process (this one included as `own`) between start() and
    per_op(ops): microseconds of CPU per operation, by name; wait_per_op(ops): microseconds
    per operation its threads waited for a core meanwhile."""

    def __init__(self, pids: dict[str, list[int]], own: str | None = None) -> None:
        self.pids = pids
        self.own = own
        self._start: dict[str, float] = {}
        self._start_wait: dict[str, float] = {}

    def _each(self, of_pid: Callable[[int], float], own: Callable[[], float]) -> dict[str, float]:
        values = {name: sum(of_pid(p) for p in pids) for name, pids in self.pids.items()}
        if self.own is not None:
            values[self.own] = own()
        return values

    def _now(self) -> dict[str, float]:
        return self._each(cpu_seconds, time.process_time)

    def _waited(self) -> dict[str, float]:
        return self._each(run_queue_wait_seconds, lambda: run_queue_wait_seconds(os.getpid()))

    def start(self) -> None:
        self._start = self._now()
        self._start_wait = self._waited()

    def spent(self) -> dict[str, float]:
        """CPU seconds of each since start()."""
        return {name: value - self._start[name] for name, value in self._now().items()}

    def per_op(self, ops: int) -> dict[str, float]:
        return _per_op(self.spent(), ops)

    def wait_per_op(self, ops: int) -> dict[str, float]:
        return _per_op({name: value - self._start_wait[name] for name, value in self._waited().items()}, ops)


def _per_op(seconds: dict[str, float], ops: int) -> dict[str, float]:
    return {name: round(value / max(ops, 1) * 1e6, 1) for name, value in seconds.items()}
