"""python -m controlplane.sim: run Raft fault schedules and check them.

Exit status: 0 when every schedule is safe and linearizable, 1 on any violation, 2 on bad
arguments. A failing seed prints the exact command that replays it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from controlplane import bugs
from controlplane.sim.faults import FOCUS
from controlplane.sim.runner import Job, default_workers, run_many, stderr_progress
from controlplane.sim.scenarios import SCENARIOS
from controlplane.sim.world import SimOptions


def _replica_list(text: str) -> list[int]:
    try:
        sizes = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--replicas takes comma-separated integers, got {text!r}") from None
    if not sizes or any(n < 1 or n > 9 for n in sizes):
        raise argparse.ArgumentTypeError(f"--replicas sizes must be between 1 and 9, got {text!r}")
    return sizes


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _same_hash_seed() -> None:
    """A replay must iterate sets of strings in the same order as the run it replays."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, "-m", "controlplane.sim", *sys.argv[1:]])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.sim", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=_positive, default=100, help="number of schedules (seeds first..first+N-1)")
    p.add_argument("--first-seed", type=int, default=0, help="first seed of the range")
    p.add_argument("--seed", type=int, help="run exactly this one seed (replay)")
    p.add_argument("--replicas", type=_replica_list, default=[3, 5], help="cluster sizes, cycled over seeds")
    p.add_argument("--duration-ms", type=_positive, default=SimOptions.duration_ms, help="simulated fault period")
    p.add_argument("--scenario", choices=sorted(SCENARIOS), help="a scripted fault timeline instead of random faults")
    p.add_argument("--focus", choices=sorted(FOCUS), help="lean the fault mix towards one kind of trouble")
    p.add_argument("--lossy-disk", action="store_true", help="disks lose fsynced writes (breaks Raft on purpose)")
    p.add_argument(
        "--bug",
        choices=sorted(bugs.KNOWN),
        help="switch a fixed defect back on (controlplane/bugs.py) to see the simulator catch it",
    )
    p.add_argument("--no-faults", action="store_true", help="no network or node faults")
    p.add_argument("--jobs", type=_positive, default=default_workers(), help="worker processes")
    p.add_argument("--json", action="store_true", help="print one JSON summary line on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = p.parse_args(argv)

    seeds = [args.seed] if args.seed is not None else list(range(args.first_seed, args.first_seed + args.seeds))
    jobs = []
    for seed in seeds:
        replicas = args.replicas[seed % len(args.replicas)] if args.seed is None else args.replicas[0]
        opts = SimOptions(
            replicas=replicas,
            duration_ms=args.duration_ms,
            lossy_disk=args.lossy_disk,
            faults=not args.no_faults,
            bug=args.bug,
            focus=args.focus,
            scenario=args.scenario,
        )
        jobs.append(Job(seed, opts))
    progress = None if args.quiet else stderr_progress(max(1, len(jobs) // 10))
    summary, elapsed = run_many(jobs, args.jobs, progress)

    if args.json:
        print(
            json.dumps(
                {
                    "schedules": summary.schedules,
                    "violations": summary.violations,
                    "ops": summary.ops,
                    "ops_ok": summary.ops_ok,
                    "linearizable": summary.linearizable,
                    "replicas": args.replicas,
                    "unconverged": summary.unconverged,
                    "elapsed_s": round(elapsed, 2),
                    "failed": [dataclasses.asdict(f) for f in summary.failed[:20]],
                    "totals": summary.totals,
                }
            )
        )
    else:
        t = summary.totals
        print(f"schedules      {summary.schedules} (replicas {','.join(map(str, args.replicas))}) in {elapsed:.1f}s")
        print(f"client ops     {summary.ops} ({summary.ops_ok} acknowledged, the rest timed out: outcome unknown)")
        print(
            f"faults         {t.get('crashes', 0)} crashes ({t.get('power_losses', 0)} power losses, "
            f"{t.get('crashes_mid_io', 0)} between two disk operations, {t.get('torn_writes', 0)} torn writes), "
            f"{t.get('fsync_errors', 0)} failed fsyncs, {t.get('corruptions', 0)} corrupted logs "
            f"({t.get('refused_starts', 0)} refused to start), {t.get('partitions', 0)} partitions"
        )
        print(
            f"membership     {t.get('conf_changes', 0)} changes, {t.get('replaced', 0)} members replaced, "
            f"{t.get('transfers', 0)} leadership transfers"
        )
        print(
            f"clients        {t.get('refused_commands', 0)} commands refused, {t.get('expired_answers', 0)} "
            f"answered 'session expired', {t.get('telemetry_batches', 0)} telemetry batches "
            f"({t.get('telemetry_refused', 0)} malformed, refused)"
        )
        print(
            f"raft           {t.get('elections', 0)} elections, {t.get('snapshots_taken', 0)} snapshots taken, "
            f"{t.get('snapshots_installed', 0)} installed from a leader, {t.get('messages', 0)} messages"
        )
        print(f"safety         {summary.violations} violations; linearizable: {summary.linearizable}")
        for f in summary.failed[:10]:
            print(f"  seed {f.seed}: {f.violations[0]}\n    replay: {f.replay}")
    return 1 if summary.violations else 0


if __name__ == "__main__":
    _same_hash_seed()
    sys.exit(main())
