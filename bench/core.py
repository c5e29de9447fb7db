"""Core throughput: propose -> commit -> apply on 3 in-process replicas, no I/O.

    python -m bench.core [--commands N] [--batch B] [--json]

Runs the same workload twice in one process: one proposal per network round ("unbatched")
and B proposals per round ("batched", the driver's group commit), and prints commands/s for
both and their ratio. Messages are delivered in memory; persistence is in-memory lists.
"""

from __future__ import annotations

import argparse
import json
import time

from controlplane.raft import RaftConfig
from controlplane.raft.harness import Network


def run(commands: int, batch: int, payload: bytes) -> dict[str, float]:
    net = Network(3, config=lambda nid: RaftConfig(node_id=nid, max_entries_per_msg=4096, max_inflight_msgs=256))
    net.elect(1)
    leader = net.core(1)
    start = time.perf_counter()
    done = 0
    while done < commands:
        n = min(batch, commands - done)
        leader.propose_many([payload] * n)
        net.settle()
        done += n
    elapsed = time.perf_counter() - start
    applied = min(len(r.applied) for r in net.replicas.values())
    if applied != commands:
        raise RuntimeError(f"only {applied} of {commands} commands applied on every replica")
    return {"commands": commands, "seconds": elapsed, "commands_per_s": commands / elapsed}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", type=int, default=200_000)
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--payload-bytes", type=int, default=64)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.commands < 1 or args.batch < 1 or args.payload_bytes < 0:
        p.error("--commands and --batch must be positive, --payload-bytes non-negative")
    payload = b"x" * args.payload_bytes
    unbatched = run(min(args.commands, 20_000), 1, payload)
    batched = run(args.commands, args.batch, payload)
    result = {
        "unbatched_commands_per_s": round(unbatched["commands_per_s"]),
        "batched_commands_per_s": round(batched["commands_per_s"]),
        "batch": args.batch,
        "speedup": round(batched["commands_per_s"] / unbatched["commands_per_s"], 1),
        "replicas": 3,
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"unbatched (1 per round): {result['unbatched_commands_per_s']:>10,} commands/s")
        print(f"batched ({args.batch} per round): {result['batched_commands_per_s']:>10,} commands/s")
        print(f"batching speed-up:       {result['speedup']}x")


if __name__ == "__main__":
    main()
