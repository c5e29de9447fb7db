"""The full campaign from the README, kept out of the default run: `pytest -m slow` (~25 min
on 2 cores)."""

import pytest

from controlplane.sim.runner import Job, default_workers, run_many
from controlplane.sim.world import SimOptions


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_two_thousand_schedules_are_safe_and_linearizable():
    jobs = [Job(seed, SimOptions(replicas=(3, 5)[seed % 2])) for seed in range(2000)]
    summary, _ = run_many(jobs, workers=default_workers())
    assert summary.schedules == 2000
    assert summary.violations == 0, [(f.replay, f.violations[:2]) for f in summary.failed]
    assert summary.linearizable and summary.unconverged == 0 and summary.totals["undecided"] == 0
