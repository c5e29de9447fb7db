"""bench/processes.py: CPU per operation of processes read from /proc."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.processes import CpuMeter, cpu_seconds, pids_named, run_queue_wait_seconds

BURN = "import time\nend = time.process_time() + {seconds}\nwhile time.process_time() < end: pass\ntime.sleep(60)"


def test_the_meter_counts_what_each_process_spent_per_operation():
    burner = subprocess.Popen([sys.executable, "-c", BURN.format(seconds=0.3)])
    try:
        assert burner.pid in pids_named(Path(f"/proc/{burner.pid}/comm").read_text().strip())
        meter = CpuMeter({"burner": [burner.pid]}, own="me")
        meter.start()
        deadline = time.monotonic() + 30
        while cpu_seconds(burner.pid) < 0.3 and time.monotonic() < deadline:
            time.sleep(0.02)
        per_op = meter.per_op(1000)
        assert set(per_op) == {"burner", "me"}
        assert 150 <= per_op["burner"] <= 400  # ~0.3 s (less what it spent before start) / 1000 ops
        assert per_op["me"] >= 0
    finally:
        burner.kill()
        burner.wait()


@pytest.mark.skipif(not Path("/proc/self/schedstat").exists(), reason="this kernel keeps no schedstat")
def test_the_meter_counts_the_time_processes_waited_for_a_core():
    """Three processes burning 0.4 s of CPU each on one core: each waits while the two others
    run, ~0.8 s, about twice what it ran itself (whatever else the machine does only adds)."""
    core = min(os.sched_getaffinity(0))
    burners = [
        subprocess.Popen(["taskset", "-c", str(core), sys.executable, "-c", BURN.format(seconds=0.4)]) for _ in range(3)
    ]
    try:
        meter = CpuMeter({f"burner {n}": [b.pid] for n, b in enumerate(burners)}, own="me")
        meter.start()
        deadline = time.monotonic() + 30
        while min(cpu_seconds(b.pid) for b in burners) < 0.4 and time.monotonic() < deadline:
            time.sleep(0.02)
        ran, waited = meter.per_op(1000), meter.wait_per_op(1000)  # us per op: ms in all
        assert set(waited) == {"burner 0", "burner 1", "burner 2", "me"}
        for name in ("burner 0", "burner 1", "burner 2"):
            assert waited[name] >= 1.5 * ran[name] > 0, (ran, waited)
        assert run_queue_wait_seconds(burners[0].pid) * 1000 >= waited["burner 0"]
    finally:
        for b in burners:
            b.kill()
            b.wait()
