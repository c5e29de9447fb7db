"""The state machine's CPU per command: what every replica spends applying one of
bench.compare's W1/W2 writes (update_uav in an exactly-once session, ~140 bytes), with the
change feed on (as replicas run) and off.

    python -m bench.apply [--commands 30000] [--uavs 1000] [--json]

One process, no I/O: the commands are encoded first, then applied one entry each, timed by
process CPU time. W2's CPU per command summed over its processes is in `bench.compare`'s
output ("CPU us per operation"); this is the part each replica repeats.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.compare_ours import write_command
from controlplane.raft.messages import Entry
from controlplane.state.fleet import FleetState
from controlplane.sync.changefeed import ChangeFeed

CLIENTS = 64  # sessions, as W2's 64 SDK clients


def run(commands: int, uavs: int, feed: bool) -> dict[str, Any]:
    state = FleetState()
    machine: Any = ChangeFeed(state) if feed else state
    index = 0

    def apply_bytes(data: bytes) -> dict[str, Any]:
        nonlocal index
        index += 1
        answer: dict[str, Any] = machine.apply(Entry(1, index, data))
        return answer

    def apply(command: dict[str, Any]) -> dict[str, Any]:
        return apply_bytes(json.dumps(command).encode())

    apply({"type": "register_station", "station": "alpha"})
    for k in range(uavs):
        apply({"type": "register_uav", "uav": f"uav-{k:05d}", "home_station": "alpha"})
    sessions = [apply({"type": "open_session"})["session"] for _ in range(CLIENTS)]
    seqs = [0] * CLIENTS
    encoded = []
    for n in range(commands):
        c = n % CLIENTS
        seqs[c] += 1
        command = {**write_command(n % uavs), "client": sessions[c], "seq": seqs[c], "ack": seqs[c]}
        encoded.append(json.dumps(command, sort_keys=True, separators=(",", ":")).encode())
    started = time.process_time()
    for data in encoded:
        answer = apply_bytes(data)
        if not answer.get("ok"):
            raise RuntimeError(f"a write was refused: {answer}")
    cpu = time.process_time() - started
    return {"commands": commands, "cpu_us_per_command": round(cpu / commands * 1e6, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--commands", type=int, default=30_000)
    p.add_argument("--uavs", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    if args.commands < 1 or args.uavs < 1:
        p.error("--commands and --uavs must be positive")
    result = {
        "bench": "apply",
        "with_change_feed": run(args.commands, args.uavs, feed=True),
        "state_machine_alone": run(args.commands, args.uavs, feed=False),
    }
    if args.json:
        print(json.dumps(result))
        return
    for name in ("with_change_feed", "state_machine_alone"):
        print(f"{name.replace('_', ' '):<20} {result[name]['cpu_us_per_command']:>7.1f} us CPU per write")


if __name__ == "__main__":
    main()
