"""Runs many seeds (in parallel processes) and summarises them."""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from controlplane.sim.world import ScheduleResult, SimOptions, run_schedule


@dataclass(frozen=True)
class Job:
    seed: int
    options: SimOptions


@dataclass(frozen=True)
class FailedSchedule:
    seed: int
    replicas: int
    violations: list[str]
    replay: str


@dataclass
class Summary:
    schedules: int = 0
    violations: int = 0
    ops: int = 0
    ops_ok: int = 0
    linearizable: bool = True
    unconverged: int = 0
    failed: list[FailedSchedule] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    def add(self, r: ScheduleResult, replay: str) -> None:
        self.schedules += 1
        self.ops += r.stats.ops
        self.ops_ok += r.stats.ops_ok
        self.unconverged += 0 if r.converged else 1
        for k, v in dataclasses.asdict(r.stats).items():
            self.totals[k] = self.totals.get(k, 0) + v
        if r.violations:
            self.violations += len(r.violations)
            self.linearizable &= r.linearizable
            self.failed.append(FailedSchedule(r.seed, r.replicas, r.violations, replay))


def replay_command(seed: int, options: SimOptions) -> str:
    cmd = f"python -m controlplane.sim --seed {seed} --replicas {options.replicas}"
    if options.lossy_disk:
        cmd += " --lossy-disk"
    if not options.faults:
        cmd += " --no-faults"
    if options.duration_ms != SimOptions.duration_ms:
        cmd += f" --duration-ms {options.duration_ms}"
    if options.scenario:
        cmd += f" --scenario {options.scenario}"
    if options.focus:
        cmd += f" --focus {options.focus}"
    if options.bug:
        cmd += f" --bug {options.bug}"
    return cmd


def _run(job: Job) -> ScheduleResult:
    return run_schedule(job.seed, job.options)


def run_many(
    jobs: list[Job], workers: int, progress: Callable[[int, int, Summary], None] | None = None
) -> tuple[Summary, float]:
    started = time.monotonic()
    summary = Summary()
    results: Iterator[ScheduleResult]
    if workers <= 1 or len(jobs) < 4:
        results = map(_run, jobs)
        pool = None
    else:
        pool = multiprocessing.get_context("fork").Pool(workers)
        results = pool.imap(_run, jobs, chunksize=4)
    try:
        for n, (job, result) in enumerate(zip(jobs, results, strict=True), start=1):
            summary.add(result, replay_command(job.seed, job.options))
            if progress is not None:
                progress(n, len(jobs), summary)
    finally:
        if pool is not None:
            pool.terminate()
    return summary, time.monotonic() - started


def first_violation(jobs: list[Job], workers: int) -> tuple[ScheduleResult | None, int]:
    """Run jobs in order until one finds a violation: (its result, schedules run); (None,
    len(jobs)) when none does. How the bug switches are shown to be caught."""
    pool = multiprocessing.get_context("fork").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_run, jobs) if pool is not None else map(_run, jobs)
        for n, result in enumerate(results, start=1):
            if result.violations:
                return result, n
        return None, len(jobs)
    finally:
        if pool is not None:
            pool.terminate()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def stderr_progress(every: int) -> Callable[[int, int, Summary], None]:
    def report(done: int, total: int, s: Summary) -> None:
        if done % every == 0 or done == total:
            print(f"[sim] {done}/{total} schedules, {s.ops} ops, {s.violations} violations", file=sys.stderr)

    return report
