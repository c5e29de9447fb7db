"""bench/api.py end to end: Ray replicas, `python -m controlplane.api` as its own process, HTTP
clients; every answer a 200 and the API's CPU per request measured (slow: ~30 s)."""

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_the_api_bench_reports_requests_and_the_api_process_cpu():
    run = subprocess.run(
        [sys.executable, "-m", "bench.api", "--clients", "4", "--seconds", "1", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["ops"] > 0 and result["errors"] == 0
    assert result["api_cpu_us_per_request"] > 0


def test_the_api_bench_refuses_nonsense_arguments():
    run = subprocess.run([sys.executable, "-m", "bench.api", "--clients", "0"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "--clients" in run.stderr
