"""py-consul's own API tests against our Consul emulator. The emulator implements only
what our adapter relies on, so only part of py-consul's suite passes; this pins that part
(and prints the full pass/fail list) so the emulator cannot silently regress."""

import subprocess

import pytest

from tests.consul_api.run_pyconsul_tests import run

MUST_PASS = {
    "test_kv.py::TestConsul::test_kv",
    "test_kv.py::TestConsul::test_kv_wait",
    "test_kv.py::TestConsul::test_kv_put_cas",
    "test_kv.py::TestConsul::test_kv_put_flags",
    "test_kv.py::TestConsul::test_kv_delete",
    "test_kv.py::TestConsul::test_kv_delete_cas",
    "test_agent.py::TestAgent::test_service_dereg_issue_156",
}


def test_pyconsul_api_tests_against_the_emulator(tmp_path):
    try:
        outcome = run("1.8.0", tmp_path)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"SKIPPED LOUDLY: could not download py-consul's sdist from PyPI: {exc}")
    print("py-consul API tests passing against the emulator:", sorted(outcome["passed"]))
    print("failing (emulator does not implement these endpoints/semantics):", len(outcome["failed"]))
    assert set(outcome["passed"]) >= MUST_PASS, sorted(MUST_PASS - set(outcome["passed"]))
