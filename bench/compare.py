"""Side by side on this machine, in one run: etcd 3.4, PySyncObj and our control plane.

    python -m bench.compare [--quick] [--json] [--seconds 8] [--clients 64]
                            [--systems etcd,pysyncobj,ours] [--workloads W1,W2,W3,W4]
                            [--etcd-clients go,python]

Each system runs 3 members on 127.0.0.1 and is stopped before the next starts:
- etcd: Debian etcd-server 3.4, default fsync; driven by a Python client (aetcd) and by
  etcd's Go client (bench/etcd_load, built with Debian's golang-go from golang-etcd-server-dev).
- PySyncObj 0.3: journal on; its default batching mode and appendEntriesUseBatch=False;
  the load runs in the leader node's process (it has no client protocol).
- ours: 3 replicas as Ray actors, the SDK in this process (bench/compare_ours.py).
Workloads: W1 one client, sequential 100-byte writes; W2 64 clients writing; W3 64 clients,
linearizable reads (PySyncObj has none); W4 telemetry of 10,000 UAVs (etcd: transactions
of 128 puts; PySyncObj: a replicated dict updated 1,000 UAVs per call; ours: the telemetry
path, best sustained rate of a stepped run, latency from report to applied on every replica).
Prints a table (ops/s, p50, p99; ratios ours/peer) and, with --json, one JSON line keyed by
workload. --quick: 3 s per workload, about 2-3 minutes in all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

WORKLOADS = ("W1", "W2", "W3", "W4")
SYSTEMS = ("etcd", "pysyncobj", "ours")
W4_CLIENTS = 16
UAVS = 10_000
PYSYNCOBJ_BATCH = 1000
GOALS = {  # issue 14's
    "W1": "ours p50 <= etcd-go p50 (fsync on every commit)",
    "W2": "ours >= 2 x etcd-go and >= 2 x pysyncobj-nobatch (ops/s)",
    "W3": "ours >= 1.5 x etcd-go (ops/s, linearizable reads)",
    "W4": "ours >= 1,000,000 updates/s applied on every replica with p99 <= 250 ms, and >= pysyncobj-nobatch",
}
W4_P99_MS = 250.0
STEP_FIELDS = ("offered_per_s", "updates_per_s", "p50_ms", "p99_ms")
NOT_RUN = {("pysyncobj", "W3"): "PySyncObj has no linearizable read"}


def progress(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ratios(ours: dict[str, Any], peer: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float, b: float) -> float | None:
        return round(a / b, 3) if a == a and b == b and b > 0 else None  # NaN-safe

    return {"ops_per_s": ratio(ours["ops_per_s"], peer["ops_per_s"]), "p50": ratio(ours["p50_ms"], peer["p50_ms"])}


def goals(table: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each goal's value (ours / peer) and verdict, only where ours and the peer ran."""
    out: dict[str, dict[str, Any]] = {}

    def rate(w: str, system: str) -> float | None:
        r = table.get(w, {}).get(system)
        return None if r is None or "ops_per_s" not in r else float(r["ops_per_s"])

    w1 = table.get("W1", {})
    if "ours" in w1 and "etcd-go" in w1:
        value = w1["ours"]["p50_ms"] / w1["etcd-go"]["p50_ms"]
        out["W1"] = {"goal": GOALS["W1"], "value": round(value, 2), "met": value <= 1.0}
        breakdown = w1["ours"].get("breakdown")
        if breakdown:
            # A linearizable read is a write's hops without its disk writes and apply; a write
            # adds at least one fdatasync (the acknowledging follower's). Above 1, no change
            # but cheaper hops can meet the goal.
            floor = breakdown["linearizable_read_p50_ms"] + breakdown["fdatasync_p50_ms"]
            out["W1"]["read_round_and_fsync_vs_etcd_write"] = round(floor / w1["etcd-go"]["p50_ms"], 2)
    ours2, pso2, etcd2 = rate("W2", "ours"), rate("W2", "pysyncobj-nobatch"), rate("W2", "etcd-go")
    if ours2 is not None and pso2 and etcd2:
        out["W2"] = {"goal": GOALS["W2"], "value": {"etcd-go": round(ours2 / etcd2, 2),
                                                    "pysyncobj-nobatch": round(ours2 / pso2, 2)},
                     "met": ours2 >= 2 * etcd2 and ours2 >= 2 * pso2}  # fmt: skip
        ceiling = table["W2"]["ours"].get("ceiling")
        if ceiling:
            # Below the goal, no change to replication can meet it: only a cheaper apply or SDK.
            out["W2"]["ceiling_vs_goal"] = round(ceiling["ops_per_s"] / (2 * max(etcd2, pso2)), 2)
    ours3, etcd3 = rate("W3", "ours"), rate("W3", "etcd-go")
    if ours3 is not None and etcd3:
        out["W3"] = {"goal": GOALS["W3"], "value": round(ours3 / etcd3, 2), "met": ours3 >= 1.5 * etcd3}
    ours4, pso4 = rate("W4", "ours"), rate("W4", "pysyncobj-nobatch")
    if ours4 is not None:
        p99 = float(table["W4"]["ours"]["p99_ms"])
        met = ours4 >= 1_000_000 and p99 <= W4_P99_MS and (pso4 is None or ours4 >= pso4)
        out["W4"] = {"goal": GOALS["W4"], "value": {"updates_per_s": ours4, "p99_ms": p99,
                                                    "pysyncobj-nobatch": None if not pso4 else round(ours4 / pso4, 2)},
                     "met": met}  # fmt: skip
    return out


def print_table(table: dict[str, dict[str, Any]]) -> None:
    print(f"{'workload':<8} {'system':<18} {'ops/s':>11} {'p50 ms':>9} {'p99 ms':>9}   ours/peer ops/s  ours/peer p50")
    for w in WORKLOADS:
        if w not in table:
            continue
        for system, r in table[w].items():
            if system == "ratios":
                continue
            rel = table[w].get("ratios", {}).get(f"ours/{system}", {})
            rel_ops = "" if rel.get("ops_per_s") is None else f"{rel['ops_per_s']:.2f}"
            rel_p50 = "" if rel.get("p50") is None else f"{rel['p50']:.2f}"
            if "not_run" in r:
                print(f"{w:<8} {system:<18} {'-':>11} {'-':>9} {'-':>9}   {r['not_run']}")
                continue
            print(f"{w:<8} {system:<18} {r['ops_per_s']:>11,.0f} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f}   "
                  f"{rel_ops:>15}  {rel_p50:>13}")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per workload and system")
    p.add_argument("--clients", type=int, default=64, help="concurrent clients of W2 and W3")
    p.add_argument("--systems", default=",".join(SYSTEMS))
    p.add_argument("--workloads", default=",".join(WORKLOADS))
    p.add_argument("--etcd-clients", default="go,python")
    p.add_argument("--quick", action="store_true", help="3 s per workload (about 2-3 minutes in all)")
    p.add_argument("--json", action="store_true", help="end with one JSON line")
    args = p.parse_args()
    systems, workloads = args.systems.split(","), args.workloads.split(",")
    etcd_clients = args.etcd_clients.split(",")
    if not set(systems) <= set(SYSTEMS) or not systems:
        p.error(f"--systems must be a comma-separated subset of {','.join(SYSTEMS)}, got {args.systems!r}")
    if not set(workloads) <= set(WORKLOADS) or not workloads:
        p.error(f"--workloads must be a comma-separated subset of {','.join(WORKLOADS)}, got {args.workloads!r}")
    if not set(etcd_clients) <= {"go", "python"}:
        p.error(f"--etcd-clients must be go, python or both, got {args.etcd_clients!r}")
    if args.seconds <= 0 or args.clients < 1:
        p.error("--seconds and --clients must be positive")
    if "etcd" in systems and shutil.which("etcd") is None:
        p.error("etcd is not installed (Debian: apt-get install -y etcd-server; scripts/bench_deps.sh does it)")
    seconds = 3.0 if args.quick else args.seconds
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    results: dict[str, dict[str, Any]] = {}  # system -> workload -> result
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="uav-compare-") as root:
        if "etcd" in systems:
            from bench import compare_etcd

            binary = None
            if "go" in etcd_clients:
                progress("building the Go etcd load generator")
                binary = compare_etcd.build_go_client(Path.home() / ".cache" / "uav-bench")
            progress(f"etcd 3.4, 3 members: {','.join(workloads)} with the {' and '.join(etcd_clients)} client(s)")
            by_client = compare_etcd.run(
                workloads, args.clients, seconds, root + "/etcd", W4_CLIENTS, binary, "python" in etcd_clients
            )
            for client, per_workload in by_client.items():
                results[f"etcd-{client}"] = per_workload
        if "pysyncobj" in systems:
            from bench import compare_pysyncobj

            w4 = {"clients": W4_CLIENTS, "pysyncobj_batch": PYSYNCOBJ_BATCH, "uavs": UAVS}
            modes = (
                ("pysyncobj", True, "default batching"),
                ("pysyncobj-nobatch", False, "appendEntriesUseBatch=False"),
            )
            for name, batching, mode in modes:
                progress(f"PySyncObj, 3 nodes, journal on, {mode}")
                Path(root, name).mkdir()
                results[name] = compare_pysyncobj.run(workloads, args.clients, seconds, f"{root}/{name}", batching, w4)
        if "ours" in systems:
            from bench import compare_ours

            progress("ours, 3 replicas on Ray")
            # From 0.1 M: on a slow VM state no step from 0.3 M held the latency bound, and the
            # best rate within it is the number W4 reports.
            rates = (
                [100_000, 300_000, 1_000_000]
                if args.quick
                else [100_000, 300_000, 500_000, 700_000, 1_000_000, 1_500_000]
            )
            w4 = {"uavs": UAVS, "rates": rates, "step_seconds": 2.0 if args.quick else 3.0}
            results["ours"] = compare_ours.run(workloads, args.clients, seconds, root + "/ours", w4)

    table: dict[str, dict[str, Any]] = {}
    for w in workloads:
        row: dict[str, Any] = {}
        for system, per_workload in results.items():
            if w in per_workload:
                row[system] = {k: v for k, v in per_workload[w].items() if k != "steps"}
                if "steps" in per_workload[w]:  # each offered rate, as its verdict reads them
                    row[system]["steps"] = [{k: s[k] for k in STEP_FIELDS} for s in per_workload[w]["steps"]]
            elif (system.split("-")[0], w) in NOT_RUN:
                row[system] = {"not_run": NOT_RUN[(system.split("-")[0], w)]}
        if "ours" in row:
            row["ratios"] = {
                f"ours/{system}": ratios(row["ours"], r)
                for system, r in row.items()
                if system != "ours" and "not_run" not in r
            }
        table[w] = row
    print_table(table)
    for step in table.get("W4", {}).get("ours", {}).get("steps", []):
        print("W4 ours, offered {offered_per_s:,}/s: applied on every replica {updates_per_s:,}/s, "
              "p50 {p50_ms} ms, p99 {p99_ms} ms".format(**step))  # fmt: skip
    breakdown = table.get("W1", {}).get("ours", {}).get("breakdown")
    if breakdown:
        print("W1 ours, p50 of: an actor call to the leader {actor_call_p50_ms} ms (control path only); a round "
              "trip on the leader stream {stream_round_trip_p50_ms} ms; a linearizable read "
              "{linearizable_read_p50_ms} ms; a write {write_p50_ms} ms; an fdatasync {fdatasync_p50_ms} ms"
              .format(**breakdown))  # fmt: skip
    for w, row in table.items():
        cpu = row.get("ours", {}).get("cpu_us_per_op")
        if cpu:
            spent = ", ".join(f"{name} {us:,.0f}" for name, us in cpu.items())
            print(f"{w} ours, CPU us per operation: {spent} (sum {sum(cpu.values()):,.0f})")
        waited = row.get("ours", {}).get("run_queue_wait_us_per_op")
        if waited:
            print(
                f"{w} ours, us per operation waiting for a core: "
                + ", ".join(f"{n} {us:,.0f}" for n, us in waited.items())
            )
    ceiling = table.get("W2", {}).get("ours", {}).get("ceiling")
    if ceiling:
        print(
            "W2 ours, the rate if replication cost nothing: {ops_per_s:,}/s ({cores} cores / ({replicas} replicas x "
            "{apply_us_per_write} us applying a write + {client_us_per_write} us of the SDK's))".format(**ceiling)
        )
    reached = goals(table)
    for w, g in reached.items():
        bounds = {k: g[k] for k in ("read_round_and_fsync_vs_etcd_write", "ceiling_vs_goal") if k in g}
        print(
            f"goal {w}: {g['goal']}: {g['value']} -> {'met' if g['met'] else 'MISSED'}"
            + (f" {bounds}" if bounds else "")
        )
    progress(f"done in {time.monotonic() - started:.0f} s")
    if args.json:
        machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
        print(json.dumps({"bench": "compare", "seconds": seconds, "clients": args.clients, **table,
                          "goals": reached, "machine": machine}))  # fmt: skip


if __name__ == "__main__":
    main()
