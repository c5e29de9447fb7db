"""The SDKs are client code: importing them loads none of the replica's modules."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = (
    "controlplane.replica",
    "controlplane.node",
    "controlplane.persist",
    "controlplane.actors",
    "controlplane.state.fleet",
    "controlplane.standalone.process",
)


@pytest.mark.parametrize("module", ["controlplane.client", "controlplane.node_client"])
def test_the_sdk_imports_no_server_code(module):
    probe = f"import sys, {module}; print(sorted(sys.modules))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = set(result.stdout.strip().strip("[]").replace("'", "").split(", "))
    server = sorted(m for m in loaded if any(m == s or m.startswith(s + ".") for s in SERVER_SIDE))
    assert server == [], f"{module} loads {server}"
    if module == "controlplane.node_client":
        assert "ray" not in loaded  # a standalone group is reached without Ray
