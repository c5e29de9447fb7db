"""py-consul's own API tests against our Consul emulator. The emulator implements only
what our adapter relies on, so only part of py-consul's suite passes; this pins that part
(and prints the full pass/fail list) so the emulator cannot silently regress."""

import subprocess

import pytest

from tests.consul_api.run_pyconsul_tests import run

# Every py-consul test of an endpoint the adapter uses (agent service register/deregister, TTL
# check pass/warn/fail and expiry, health service/checks/state, KV with cas, flags, recurse,
# keys, blocking queries) and of sessions. The rest of the suite tests what the emulator does
# not emulate (script/HTTP checks, catalog, connect, filters, maintenance, ACL management).
MUST_PASS = {
    "test_agent.py::TestAgent::test_agent_checks_service_id",
    "test_agent.py::TestAgent::test_agent_register_check_no_service_id",
    "test_agent.py::TestAgent::test_agent_services",
    "test_agent.py::TestAgent::test_agent_token_invalid_type",
    "test_agent.py::TestAgent::test_service_dereg_issue_156",
    "test_health.py::TestHealth::test_health_checks",
    "test_health.py::TestHealth::test_health_service",
    "test_health.py::TestHealth::test_health_service_merge_central_config",
    "test_health.py::TestHealth::test_health_state",
    "test_kv.py::TestConsul::test_kv",
    "test_kv.py::TestConsul::test_kv_acquire_release",
    "test_kv.py::TestConsul::test_kv_delete",
    "test_kv.py::TestConsul::test_kv_delete_cas",
    "test_kv.py::TestConsul::test_kv_encoding",
    "test_kv.py::TestConsul::test_kv_keys_only",
    "test_kv.py::TestConsul::test_kv_put_cas",
    "test_kv.py::TestConsul::test_kv_put_flags",
    "test_kv.py::TestConsul::test_kv_recurse",
    "test_kv.py::TestConsul::test_kv_wait",
    "test_session.py::TestSession::test_session",
    "test_session.py::TestSession::test_session_delete_ttl_renew",
}


def test_pyconsul_api_tests_against_the_emulator(tmp_path):
    try:
        outcome = run("1.8.0", tmp_path)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"SKIPPED LOUDLY: could not download py-consul's sdist from PyPI: {exc}")
    print("py-consul API tests passing against the emulator:", sorted(outcome["passed"]))
    print("failing (emulator does not implement these endpoints/semantics):", len(outcome["failed"]))
    assert set(outcome["passed"]) >= MUST_PASS, sorted(MUST_PASS - set(outcome["passed"]))
