"""The deployment examples under deploy/ are configurations the node accepts."""

from pathlib import Path

import pytest

from controlplane.standalone.config import NodeConfig

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"


def read_env_file(path: Path) -> dict[str, str]:
    """systemd EnvironmentFile syntax as the examples use it: KEY=value, KEY='value', comments."""
    env = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        env[key] = value
    return env


@pytest.mark.parametrize("name", sorted(p.name for p in DEPLOY.glob("*.env")))
def test_each_example_station_is_a_valid_node(tmp_path, name):
    env = read_env_file(DEPLOY / name)
    for variable in ("CLUSTER_TOKEN_FILE", "CONTROLPLANE_API_TOKEN_FILE"):
        secret = tmp_path / variable
        secret.write_text("an-example-secret-0123456789\n")
        env[variable] = str(secret)
    config = NodeConfig.from_env(env)
    assert config.cluster_token and config.api_token
    if not config.join:
        assert config.founders() == (1, 2, 3)


def test_the_examples_agree_on_the_founders():
    founders = {read_env_file(p)["PEER_NODES"] for p in DEPLOY.glob("station-[0-9].env")}
    assert len(founders) == 1


def test_the_unit_runs_the_node_and_does_not_restart_bad_configurations():
    unit = (DEPLOY / "controlplane-node.service").read_text()
    assert "-m controlplane node" in unit
    assert "RestartPreventExitStatus=2 3" in unit and "Restart=on-failure" in unit
