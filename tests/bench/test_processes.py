"""bench/processes.py: CPU per operation of processes read from /proc."""

import subprocess
import sys
import time
from pathlib import Path

from bench.processes import CpuMeter, cpu_seconds, pids_named


def test_the_meter_counts_what_each_process_spent_per_operation():
    burner = subprocess.Popen(
        [sys.executable, "-c", "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
         "time.sleep(60)"],
    )  # fmt: skip
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
