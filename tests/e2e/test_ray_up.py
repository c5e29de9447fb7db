"""cluster.yaml: Ray's own validation of the file, each station's resource derived on the
host, and the real thing — `ray up` over SSH to an sshd in each of three station namespaces
(bench/netns.py: each station its own address), `ray job submit` of jobs.deploy, `ray down`.

The test copy differs from cluster.yaml only where a test must: the addresses are the
namespaces', the SSH user is root with a key made here (cluster.yaml says: a dedicated station
user), each station's name and the token live in temporary homes, and setup reuses this
checkout's venv instead of installing requirements again."""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from bench.netns import StationHosts
from tests.e2e.conftest import RAY, ROOT, need_station_namespaces

SSHD = "/usr/sbin/sshd"
MARKER = "uav-control-plane e2e test"


def prepared(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    filled = prepare_config(copy.deepcopy(config))
    validate_config(filled)
    return filled


def cluster_config() -> dict:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["provider"]["head_ip"] = "127.0.0.1"
    return config


def test_cluster_yaml_passes_rays_validation_and_bad_edits_do_not():
    filled = prepared(cluster_config())
    assert filled["provider"]["type"] == "local"
    assert any("station_ray.sh head" in c for c in filled["head_start_ray_commands"])
    assert not any(c.strip() == "ray stop" for c in filled["head_start_ray_commands"])  # decided: no blind stop
    broken = cluster_config()
    broken["auth"]["ssh_user"] = 42
    with pytest.raises(Exception, match=r"ssh_user|string"):
        prepared(broken)


def station(home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "UAV_STATION"} | {"HOME": str(home), **extra}
    return subprocess.run(
        ["bash", str(ROOT / "scripts/station_ray.sh"), "name"], env=env, capture_output=True, text=True
    )


def test_each_station_names_its_resource_on_the_host(tmp_path):
    for name in ("alpha", "bravo", "charlie"):
        home = tmp_path / name
        home.mkdir()
        (home / ".uav-station").write_text(f"{name}\n")
        assert station(home).stdout.strip() == f"station:{name}"
    bare = tmp_path / "bare"
    bare.mkdir()
    assert station(bare).stdout.strip() == f"station:{socket.gethostname().split('.')[0]}"
    (bare / ".uav-station").write_text("not a name!\n")
    refused = station(bare)
    assert refused.returncode == 2 and "must be" in refused.stderr
    assert station(home, UAV_STATION="delta").stdout.strip() == "station:delta"  # the variable wins


def port_open(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex((host, port)) == 0


STATIONS = 3


@pytest.fixture
def station_sshds(tmp_path):
    """An sshd in each station namespace, listening on the station's own address only."""
    tools = Path(SSHD).exists() and shutil.which("rsync")
    need_station_namespaces(None if tools else "ray up needs openssh-server and rsync (scripts/ssh_deps.sh)")
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "host"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "client"], check=True)
    authorized = keys / "authorized_keys"
    authorized.write_text((keys / "client.pub").read_text())
    authorized.chmod(0o600)
    Path("/run/sshd").mkdir(exist_ok=True)
    with StationHosts(STATIONS) as hosts:
        procs = []
        try:
            for i in range(1, STATIONS + 1):
                config = keys / f"sshd_config_{i}"
                config.write_text(
                    f"ListenAddress {hosts.address(i)}\nPort 22\n"
                    f"HostKey {keys / 'host'}\nPidFile {keys / f'sshd{i}.pid'}\nAuthorizedKeysFile {authorized}\n"
                    "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
                    "PermitRootLogin prohibit-password\n"
                )
                procs.append(hosts.run(i, [SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True))
            deadline = time.monotonic() + 10
            while not all(port_open(hosts.address(i), 22) for i in range(1, STATIONS + 1)):
                assert all(p.poll() is None for p in procs), "an sshd exited"
                assert time.monotonic() < deadline, "the sshds did not listen on the station addresses"
                time.sleep(0.1)
            yield hosts, keys / "client"
        finally:
            for i in range(1, STATIONS + 1):  # Ray, sshd, everything the stations ran
                hosts.kill_all(i)


def test_ray_up_across_station_hosts_deploy_and_ray_down(station_sshds, tmp_path):
    """`ray up` over SSH to three station hosts (the head on the first, workers started by the
    head's autoscaler on the others), `ray job submit` of jobs.deploy: the group lands on three
    distinct stations, each replica on its station's own address; `ray down` stops Ray."""
    hosts, key = station_sshds
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    venv = Path(sys.executable).parent.parent
    # As cluster.yaml does for the station user: `ray down` runs `ray stop` in a login shell.
    activate = f"source {venv}/bin/activate  # {MARKER}"
    project = tmp_path / "uav-control-plane"
    stations = range(1, STATIONS + 1)
    head = hosts.address(1)
    start = f"RAY_AUTH_TOKEN_PATH={tmp_path / 'auth_token'} UAV_VENV={venv} bash {project / 'scripts/station_ray.sh'}"
    # The stations share this machine's home and /tmp, so each gets its name from UAV_STATION (a
    # real station keeps it in ~/.uav-station) and Ray's session files a directory of its own;
    # the workers share one start command (Ray's local provider has no per-node commands), so
    # both follow from the station's address.
    temp = {i: f"/tmp/rayup{i}-{hosts.tag}" for i in stations}  # short: Ray's socket paths are limited
    name_of = " ".join(f"{hosts.address(i)}) UAV_STATION=s{i} UAV_RAY_TEMP_DIR={temp[i]};;" for i in stations)
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config.update(
        cluster_name=f"uav-hosts-{os.getpid()}",
        provider={"type": "local", "head_ip": head, "worker_ips": [hosts.address(i) for i in range(2, STATIONS + 1)]},
        max_workers=STATIONS - 1,
        auth={"ssh_user": "root", "ssh_private_key": str(key)},
        file_mounts={str(project): str(ROOT), str(tmp_path / "auth_token"): str(token)},
        setup_commands=[f"grep -qs '{MARKER}' ~/.bashrc || echo '{activate}' >> ~/.bashrc"],
        head_start_ray_commands=[f"UAV_STATION=s1 UAV_RAY_TEMP_DIR={temp[1]} {start} head {head}"],
        worker_start_ray_commands=[
            f"ip=$(ip -o -4 addr show scope global | awk '{{print $4}}' | cut -d/ -f1); "
            f"case $ip in {name_of} esac; export UAV_STATION UAV_RAY_TEMP_DIR; {start} worker auto $RAY_HEAD_IP"
        ],
    )
    test_yaml = tmp_path / "cluster.yaml"
    test_yaml.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token.read_text(), RAY_USAGE_STATS_ENABLED="0")
    dashboard = f"http://{head}:8265"

    def submit(*argv: str) -> dict:
        command = [RAY, "job", "submit", "--address", dashboard, "--working-dir", str(ROOT), "--", "python", *argv]
        deadline = time.monotonic() + 90
        while True:
            job = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            if "No available agent" not in job.stdout + job.stderr or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
        return json.loads([line for line in job.stdout.splitlines() if line.startswith("{")][-1])

    try:
        up = subprocess.run(
            [RAY, "up", "-y", "--no-config-cache", str(test_yaml)], env=env, capture_output=True, text=True, timeout=600
        )
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        deadline = time.monotonic() + 300  # the head's autoscaler sets the workers up over SSH
        while True:
            status = subprocess.run([RAY, "status", "--address", f"{head}:6379"], env=env, capture_output=True,
                                    text=True, timeout=60)  # fmt: skip
            if all(f"station:s{i}" in status.stdout for i in stations):
                break
            assert time.monotonic() < deadline, "the workers never joined:\n" + status.stdout[-3000:]
            time.sleep(2)
        deployed = submit("-m", "jobs.deploy", "--group", "up", "--data-root", str(tmp_path / "data"))
        assert deployed["stations"] == ["s1", "s2", "s3"] and deployed["controller"]["started"]
        shown = submit("-m", "controlplane", "--group", "up", "--json", "status")
        placed = {r["station"]: r["address"].split("//")[1].split(":")[0] for r in shown["replicas"]}
        assert placed == {f"s{i}": hosts.address(i) for i in stations}  # each on its station's own address
    finally:
        down = subprocess.run([RAY, "down", "-y", str(test_yaml)], env=env, capture_output=True, text=True, timeout=300)
        bashrc = Path.home() / ".bashrc"
        if bashrc.exists():
            bashrc.write_text("".join(line for line in bashrc.read_text().splitlines(True) if MARKER not in line))
    for directory in temp.values():
        shutil.rmtree(directory, ignore_errors=True)
    assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    deadline = time.monotonic() + 30
    while port_open(head, 6379):  # ray down really stopped the head station's Ray
        assert time.monotonic() < deadline, "Ray still runs on the head station after ray down"
        time.sleep(0.5)
