"""A Ray replica's settings are the operator's: what deploy() is given is what the replica runs."""

import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.actors import ReplicaSpec

ROOT = Path(__file__).resolve().parents[2]


def test_peer_rpc_settings_reach_the_replica():
    spec = ReplicaSpec("g", 1, (1, 2, 3), "/tmp/x", rpc_timeout=1.5, rpc_max_retries=5)
    rpc = spec.settings().rpc
    assert (rpc.timeout, rpc.max_retries) == (1.5, 5)
    defaults = ReplicaSpec("g", 1, (1, 2, 3), "/tmp/x").settings().rpc
    assert (defaults.timeout, defaults.max_retries) == (0.5, 2)


def test_bad_peer_rpc_settings_are_refused_at_deploy_time():
    with pytest.raises(ValueError, match="timeout"):
        ReplicaSpec("g", 1, (1, 2, 3), "/tmp/x", rpc_timeout=0)
    with pytest.raises(ValueError, match="max_retries"):
        ReplicaSpec("g", 1, (1, 2, 3), "/tmp/x", rpc_max_retries=-1)
    with pytest.raises(ValueError, match="rpc_stats"):
        ReplicaSpec("g", 1, (1, 2, 3), "/tmp/x", rpc_stats="off")  # type: ignore[arg-type]


def test_jobs_deploy_names_a_bad_rpc_setting_before_touching_the_cluster():
    result = subprocess.run(
        [sys.executable, "-m", "jobs.deploy", "--group", "g", "--rpc-max-retries", "-1", "--address", "127.0.0.1:1"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--rpc-max-retries" in result.stderr
