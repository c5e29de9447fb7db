import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from controlplane.node_ids import raft_id_of
from controlplane.standalone.config import ConfigError, NodeConfig

ROOT = Path(__file__).resolve().parents[3]
PEERS = json.dumps(
    [
        {"node_id": "node_1", "address": "127.0.0.1", "port": 7001},
        {"node_id": "node_2", "address": "127.0.0.2", "port": 7002},
        {"node_id": "node_3", "address": "127.0.0.3", "port": 7003},
    ]
)


def env(tmp_path: Path, **overrides: str) -> dict[str, str]:
    base = {
        "NODE_ID": "node_1",
        "NODE_ADDRESS": "127.0.0.1",
        "NODE_PORT": "7001",
        "PEER_NODES": PEERS,
        "DATA_DIR": str(tmp_path / "data"),
        "API_PORT": "8081",
        "API_INSECURE": "1",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v != "<unset>"}


def test_the_specs_variables_make_a_config(tmp_path):
    c = NodeConfig.from_env(env(tmp_path))
    assert (c.name, c.raft_id, c.address, c.port, c.api_port) == ("node_1", 1, "127.0.0.1", 7001, 8081)
    assert c.founders() == (1, 2, 3)
    assert c.discovery_type == "static"
    assert "token" not in repr(c).lower() or "cluster_token=" not in repr(c)


def test_raft_ids_are_stable_and_distinct():
    assert raft_id_of("node_1") == 1 and raft_id_of("node_42") == 42
    named = [raft_id_of(n) for n in ("alpha", "bravo", "station-7", "node_01", "node_0")]
    assert len(set(named)) == len(named) and all(i > 2**32 for i in named)
    assert all(i < 2**53 for i in named)  # exact in JSON
    assert raft_id_of("alpha") == raft_id_of("alpha")


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"NODE_ID": "<unset>"}, "NODE_ID"),
        ({"NODE_ID": "node 1"}, "NODE_ID"),
        ({"NODE_ADDRESS": "<unset>"}, "NODE_ADDRESS"),
        ({"NODE_ADDRESS": "0.0.0.0"}, "NODE_ADDRESS"),
        ({"NODE_PORT": "70000"}, "NODE_PORT"),
        ({"NODE_PORT": "٣٣"}, "NODE_PORT"),  # Unicode digits int() would refuse
        ({"API_PORT": "7001"}, "API_PORT"),
        ({"PEER_NODES": "[{"}, "PEER_NODES"),
        ({"PEER_NODES": "<unset>"}, "PEER_NODES"),
        ({"PEER_NODES": json.dumps([{"node_id": "node_2", "address": "127.0.0.2"}])}, "PEER_NODES"),
        ({"PEER_NODES": json.dumps([{"node_id": "node_1", "address": "127.0.0.9", "port": 7001}])}, "PEER_NODES"),
        ({"PEER_NODES": json.dumps([{"node_id": "node_2", "address": "127.0.0.2", "port": True}])}, "PEER_NODES"),
        ({"PEER_NODES": json.dumps([{"node_id": "node_2", "address": "0.0.0.0", "port": 7002}])}, "PEER_NODES"),
        ({"DISCOVERY_TYPE": "zookeeper"}, "DISCOVERY_TYPE"),
        ({"DATA_DIR": "<unset>"}, "DATA_DIR"),
        (
            {
                "NODE_ADDRESS": "10.9.8.7",
                "PEER_NODES": json.dumps([{"node_id": "node_2", "address": "10.9.8.6", "port": 7002}]),
            },
            "CLUSTER_TOKEN",
        ),  # off loopback without a token
        ({"CLUSTER_TOKEN": "short"}, "CLUSTER_TOKEN"),
        ({"CLUSTER_TOKEN_FILE": "/nonexistent/token"}, "CLUSTER_TOKEN_FILE"),
        ({"API_INSECURE": "<unset>"}, "CONTROLPLANE_API_TOKEN"),
        ({"API_INSECURE": "maybe"}, "API_INSECURE"),
        ({"TICK_INTERVAL": "nan"}, "TICK_INTERVAL"),
        ({"ELECTION_TICKS": "2"}, "ELECTION_TICKS"),
    ],
)
def test_a_bad_variable_is_named(tmp_path, overrides, variable):
    with pytest.raises(ConfigError) as caught:
        NodeConfig.from_env(env(tmp_path, **overrides))
    assert caught.value.variable == variable, str(caught.value)
    assert str(caught.value).startswith(f"{variable}: ")


def test_a_token_never_appears_in_errors_or_repr(tmp_path):
    secret = "s3cret-s3cret-s3cret with space"
    with pytest.raises(ConfigError) as caught:
        NodeConfig.from_env(env(tmp_path, CLUSTER_TOKEN=secret))
    assert "s3cret" not in str(caught.value)
    good = NodeConfig.from_env(env(tmp_path, CLUSTER_TOKEN="s3cret-s3cret-s3cret-0", CONTROLPLANE_API_TOKEN="a" * 20))
    assert "s3cret" not in repr(good) and "aaaa" not in repr(good)


def test_tokens_come_from_files(tmp_path):
    (tmp_path / "cluster").write_text("from-a-file-0123456789\n")
    c = NodeConfig.from_env(
        env(
            tmp_path,
            CLUSTER_TOKEN_FILE=str(tmp_path / "cluster"),
            NODE_ADDRESS="10.1.1.1",
            PEER_NODES=json.dumps([{"node_id": "node_2", "address": "10.1.1.2", "port": 7002}]),
        )
    )
    assert c.cluster_token == "from-a-file-0123456789"
    assert c.founders() == (1, 2)


def test_bad_configuration_exits_2_and_writes_nothing(tmp_path):
    bad = {**os.environ, **env(tmp_path, NODE_PORT="not-a-port")}
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "node"], env=bad, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("controlplane node: NODE_PORT: "), result.stderr
    assert not (tmp_path / "data").exists()


def test_help_lists_the_variables():
    result = subprocess.run(
        [sys.executable, "-m", "controlplane", "node", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    for name in ("NODE_ID", "NODE_ADDRESS", "NODE_PORT", "PEER_NODES", "DISCOVERY_TYPE", "DATA_DIR", "API_PORT"):
        assert name in result.stdout


@pytest.mark.parametrize(("choice", "loop_module"), [("", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")])
def test_a_node_runs_on_the_event_loop_it_is_told(tmp_path, monkeypatch, choice, loop_module):
    import asyncio

    from controlplane.standalone import process

    ran_on: list[str] = []

    async def serve(config, group):
        ran_on.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
        return 0

    monkeypatch.setattr(process, "serve", serve)
    assert process.main(env(tmp_path, EVENT_LOOP=choice)) == 0
    assert ran_on == [loop_module]


def test_an_unknown_event_loop_is_refused_by_name(tmp_path, capsys):
    from controlplane.standalone import process

    assert process.main(env(tmp_path, EVENT_LOOP="trio")) == process.EXIT_CONFIG
    assert "EVENT_LOOP" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
