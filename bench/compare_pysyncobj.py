"""PySyncObj's side of bench/compare.py: 3 node processes on 127.0.0.1, journal on, in its
default batching mode or with appendEntriesUseBatch=False; the load runs in the leader's
process (bench/pysyncobj_node.py says why). It has no linearizable read: W3 is not run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.ports import free_port

ROOT = Path(__file__).resolve().parents[1]


class PySyncObjCluster:
    def __init__(self, root: str, batching: bool) -> None:
        addresses = [f"127.0.0.1:{free_port()}" for _ in range(3)]
        self.logs = [Path(root, f"node{i}.log") for i in range(3)]
        self.procs = []
        for i, me in enumerate(addresses):
            partners = ",".join(a for a in addresses if a != me)
            command = [sys.executable, "-m", "bench.pysyncobj_node", "--self", me, "--partners", partners,
                       "--journal", f"{root}/node{i}.journal", *([] if batching else ["--no-batch"])]  # fmt: skip
            with self.logs[i].open("w") as log:  # the child keeps its own descriptor
                self.procs.append(
                    subprocess.Popen(
                        command, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
                    )
                )

    def ask(self, proc: subprocess.Popen[str], command: dict[str, Any]) -> dict[str, Any]:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(command) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"PySyncObj node {proc.pid} exited (code {proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def leader(self, timeout: float = 30.0) -> subprocess.Popen[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            statuses = [self.ask(p, {"op": "status"}) for p in self.procs]
            leaders = [p for p, s in zip(self.procs, statuses, strict=True) if s["leader"] and s["ready"]]
            if len(leaders) == 1 and all(s["ready"] for s in statuses):
                return leaders[0]
            time.sleep(0.1)
        raise TimeoutError(f"PySyncObj elected no leader within {timeout}s")

    def divergence_warnings(self) -> int:
        """PySyncObj's own "state machine may have diverged" warnings (it truncated entries it
        had already applied), counted over the nodes' logs."""
        return sum(log.read_text(errors="replace").count("may have diverged") for log in self.logs)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None and proc.stdin is not None:
                proc.stdin.close()  # the node destroys itself at end of input
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run(
    workloads: list[str], clients: int, seconds: float, root: str, batching: bool, w4: dict[str, Any]
) -> dict[str, Any]:
    cluster = PySyncObjCluster(root, batching)
    results: dict[str, Any] = {}
    try:
        leader = cluster.leader()
        plan = {
            "W1": {"kind": "set", "clients": 1},
            "W2": {"kind": "set", "clients": clients},
            "W4": {"kind": "set_many", "clients": w4["clients"], "batch": w4["pysyncobj_batch"], "keys": w4["uavs"]},
        }
        for name, spec in plan.items():
            if name in workloads:
                before = cluster.divergence_warnings()
                results[name] = cluster.ask(leader, {"op": "run", "seconds": seconds, "value_size": 100, **spec})
                results[name]["divergence_warnings"] = cluster.divergence_warnings() - before
    finally:
        cluster.stop()
    return results
