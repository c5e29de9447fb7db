"""One PySyncObj node for bench/compare.py, driven by JSON lines on stdin (answers on stdout).

PySyncObj has no client protocol: its clients are its nodes. So the load runs inside the
leader's process, as closed-loop chains of replicated calls with callbacks (a callback
issues the client's next call), which spares PySyncObj the client hop etcd and ours pay.

    python -m bench.pysyncobj_node --self 127.0.0.1:P --partners 127.0.0.1:Q,127.0.0.1:R
                                   --journal FILE [--no-batch]

Commands: {"op": "status"}; {"op": "run", "kind": "set"|"set_many", "clients": N,
"seconds": S, "batch": B, "value_size": V, "keys": K}; {"op": "stop"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, replicated

from bench.loadgen import summarize


class ReplicatedDict(SyncObj):  # type: ignore[misc]
    def __init__(self, me: str, partners: list[str], conf: SyncObjConf) -> None:
        super().__init__(me, partners, conf)
        self._data: dict[str, Any] = {}

    @replicated  # type: ignore[misc]
    def set(self, key: str, value: bytes) -> None:
        self._data[key] = value

    @replicated  # type: ignore[misc]
    def set_many(self, items: dict[str, Any]) -> None:
        self._data.update(items)


def run_load(node: ReplicatedDict, spec: dict[str, Any]) -> dict[str, Any]:
    clients, seconds, batch = int(spec["clients"]), float(spec["seconds"]), int(spec.get("batch", 1))
    value, keys = b"v" * int(spec.get("value_size", 100)), int(spec.get("keys", 10_000))
    kind = spec["kind"]
    latencies: list[float] = []
    counts = {"ops": 0, "errors": 0, "running": clients}
    lock, finished = threading.Lock(), threading.Event()
    deadline = time.monotonic() + seconds

    def issue(client: int, n: int) -> None:
        if time.monotonic() >= deadline:
            with lock:
                counts["running"] -= 1
                if counts["running"] == 0:
                    finished.set()
            return
        issued = time.monotonic()

        def done(_result: Any, error: int) -> None:
            with lock:
                if error == FAIL_REASON.SUCCESS:
                    latencies.append(time.monotonic() - issued)
                    counts["ops"] += batch if kind == "set_many" else 1
                else:
                    counts["errors"] += 1
            issue(client, n + 1)

        if kind == "set":
            node.set(f"uav-{(client + n * clients) % keys:05d}", value, callback=done)
        else:
            first = (client + n * clients) * batch
            node.set_many({f"uav-{(first + b) % keys:05d}": value for b in range(batch)}, callback=done)

    start = time.monotonic()
    for c in range(clients):
        issue(c, 0)
    finished.wait(seconds + 30)
    return summarize(latencies, counts["ops"], time.monotonic() - start, counts["errors"], calls=len(latencies))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--self", dest="me", required=True)
    p.add_argument("--partners", required=True)
    p.add_argument("--journal", required=True)
    p.add_argument("--no-batch", action="store_true", help="appendEntriesUseBatch=False (low latency)")
    args = p.parse_args()
    conf = SyncObjConf(journalFile=args.journal, appendEntriesUseBatch=not args.no_batch)
    node = ReplicatedDict(args.me, args.partners.split(","), conf)
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "status":
            answer: dict[str, Any] = {"leader": bool(node._isLeader()), "ready": bool(node.isReady())}
        elif command["op"] == "run":
            answer = run_load(node, command)
        else:
            break
        print(json.dumps(answer), flush=True)
    node.destroy()


if __name__ == "__main__":
    main()
