"""Submit missions from a JSON, YAML or CSV file: each row validated (a bad row is reported
with its line and reason, good rows go in), with progress; exit 1 if any row was refused.

    python -m jobs.submit_missions FILE --group fleet [--clients 4]

Missions already in the fleet (a re-run of the same file) count as refused on apply with
their reason, so a partial earlier run can simply be repeated.
"""

from __future__ import annotations

import argparse
import sys
import time

from jobs.common import EXIT_USAGE, attach, finish, progress, run


async def submit(args: argparse.Namespace) -> int:
    from controlplane.client import ControlPlane
    from controlplane.missions_file import load_missions, submit_missions

    try:
        parsed = load_missions(args.file)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    for bad in parsed.bad:
        print(f"{args.file}:{bad.line}: {bad.reason}", file=sys.stderr)
    total = len(parsed.commands)
    started = time.monotonic()
    first = ControlPlane.connect(args.group)
    clients = [first] + [ControlPlane(args.group, first.replicas) for _ in range(args.clients - 1)]
    refused = await submit_missions(parsed, clients, lambda done, n: progress(done, n, "missions", started))
    for row in refused:
        print(f"{args.file}:{row['line']}: refused: {row['reason']}", file=sys.stderr)
    return finish(
        {
            "file": str(args.file),
            "rows": total + len(parsed.bad),
            "created": total - len(refused),
            "invalid": [b.to_dict() for b in parsed.bad],
            "refused": refused,
        },
        ok=not parsed.bad and not refused,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.submit_missions", description=__doc__.splitlines()[0])
    p.add_argument("file")
    p.add_argument("--group", required=True)
    p.add_argument("--clients", type=int, default=4, help="commands in flight (one client each)")
    p.add_argument("--address", default="auto")
    args = p.parse_args(argv)
    if args.clients < 1:
        p.error("--clients must be positive")
    attach(args.address)
    return run(submit(args))


if __name__ == "__main__":
    sys.exit(main())
