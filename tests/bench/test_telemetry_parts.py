"""bench/telemetry_parts.py: each part of the telemetry path measured alone (a small run
end to end, three node processes included), and the budget that adds them up."""

import json
import subprocess
import sys

from bench.telemetry_parts import budget, follower_source
from tests.conftest import ROOT


def test_a_small_run_measures_every_part_and_the_pipeline():
    out = subprocess.run(
        [sys.executable, "-m", "bench.telemetry_parts", "--rate", "30000", "--uavs", "300", "--seconds", "0.3",
         "--no-ray", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["rows_per_batch"] == 500
    parts = result["parts"]
    assert set(parts) == {"generate", "validate", "encode", "check", "join", "persist", "stream", "to_leader", "apply"}
    assert all(p["rows"] >= 3 * 500 and p["cpu_us_per_1k"] > 0 for p in parts.values())
    pipeline = result["pipeline"]
    assert pipeline["reports_accepted"] >= pipeline["reports_sent"] // 2 > 0
    assert set(pipeline["cpu_us_per_1k_by_process"]) >= {"leader", "feeder (this process)"}
    assert len(pipeline["cpu_us_per_1k_by_process"]) == 4
    assert result["budget"]["rate"] == 30000
    assert result["follower_source"] is None  # it compares with Ray's object store: not run


def part(us_per_1k: float) -> dict:
    return {"cpu_us_per_1k": us_per_1k}


def test_the_budget_adds_each_process_and_names_the_busiest():
    names = ("generate", "validate", "encode", "check", "join", "persist", "stream", "to_leader", "apply")
    parts = {n: part(100.0) for n in names}
    parts["apply"] = part(500.0)
    b = budget(parts, None, 1_000_000)
    cores = b["cores_needed_by_process"]
    assert cores["load generator"] == 0.1
    assert cores["station ingests (3, together)"] == 0.25  # validate + encode + its end of the segment's way
    assert cores["leader replica"] == 0.95  # check + join + persist + apply + its end of two streams and of it
    assert cores["follower replica 1"] == cores["follower replica 2"] == 0.65
    assert b["cores_needed"] == 2.6
    assert b["busiest_process"] == "leader replica" and b["busiest_process_rate_one_core"] == 1_052_632
    assert b["fits"] is (b["cores_here"] >= 2.6)

    # Ray's parts: the sender's share goes to the process that sends, the receiver's to the other.
    parts["ray_call"] = {"cpu_us_per_1k": 300.0, "receiver_cpu_us_per_1k": 100.0}
    parts["ray_put"] = {"cpu_us_per_1k": 200.0, "receiver_cpu_us_per_1k": 150.0}
    cores = budget(parts, None, 1_000_000)["cores_needed_by_process"]
    assert cores["load generator"] == 0.3  # generate + sending the call
    assert cores["station ingests (3, together)"] == 0.35  # validate + encode + taking the call + sending on
    assert cores["leader replica"] == 0.95  # segments come on the stream: the object store costs it nothing
    assert follower_source(parts) == {"stream_us_per_1k": 100.0, "object_store_get_us_per_1k": 150.0,
                                      "cheaper": "stream"}  # fmt: skip

    pipeline = {"cpu_us_per_1k_by_process": {"leader": 900.0, "node_2": 700.0, "node_3": 650.0,
                                             "feeder (this process)": 50.0}}  # fmt: skip
    with_pipeline = budget(parts, pipeline, 2_000_000)
    cores = with_pipeline["cores_needed_by_process"]
    assert cores["leader replica"] == 1.9  # what it spent in the pipeline, and taking the segments
    assert cores["follower replica 1"] == 1.4 and cores["follower replica 2"] == 1.3
    assert with_pipeline["fits"] is False  # the leader alone needs more than a core
