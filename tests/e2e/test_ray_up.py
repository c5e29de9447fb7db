"""cluster.yaml: Ray's own validation of the file, each station's resource derived on the
host, and the real thing — `ray up` over SSH to an sshd this test starts on 127.0.0.1 only,
`ray job submit` of jobs.deploy, `ray down`.

The test copy differs from cluster.yaml only where a test must: the head is 127.0.0.1, the
SSH user is root with a key made here (cluster.yaml says: a dedicated station user), the
station's name and token live in a temporary home, and setup reuses this checkout's venv
instead of installing requirements again."""

from __future__ import annotations

import contextlib
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

from tests.e2e.conftest import RAY, ROOT

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


def station(home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOME": str(home)}
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


def port_free(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


@pytest.fixture
def sshd(tmp_path):
    if os.geteuid() != 0 or not Path(SSHD).exists() or not shutil.which("rsync"):
        pytest.skip("SKIPPED LOUDLY: ray up e2e needs root, openssh-server and rsync (scripts/ssh_deps.sh)")
    if not port_free(22) or not all(port_free(p) for p in (6379, 8265)):
        pytest.skip("SKIPPED LOUDLY: 127.0.0.1:22 (sshd) or Ray's 6379/8265 is taken here")
    keys = tmp_path / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "host"], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "client"], check=True)
    authorized = keys / "authorized_keys"
    authorized.write_text((keys / "client.pub").read_text())
    authorized.chmod(0o600)
    config = keys / "sshd_config"
    config.write_text(
        "ListenAddress 127.0.0.1\nPort 22\n"
        f"HostKey {keys / 'host'}\nPidFile {keys / 'sshd.pid'}\nAuthorizedKeysFile {authorized}\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        "PermitRootLogin prohibit-password\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 10
    while port_free(22):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "sshd exited"
        assert time.monotonic() < deadline, "sshd did not listen on 127.0.0.1:22"
        time.sleep(0.1)
    yield keys / "client"
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(10)


def test_ray_up_submit_deploy_ray_down(sshd, tmp_path):
    home = tmp_path / "station"  # the station's files: project copy, name, token
    home.mkdir()
    token = tmp_path / "token"
    token.write_text(secrets.token_hex(32))
    venv = Path(sys.executable).parent.parent
    # As cluster.yaml does for the station user: `ray down` runs `ray stop` in a login shell.
    activate = f"source {venv}/bin/activate  # {MARKER}"
    config = cluster_config()
    project = home / "uav-control-plane"
    config.update(
        cluster_name=f"uav-e2e-{os.getpid()}",
        auth={"ssh_user": "root", "ssh_private_key": str(sshd)},
        file_mounts={str(project): str(ROOT), str(home / "auth_token"): str(token)},
        setup_commands=[f"echo alpha > {home / '.uav-station'}", f"echo '{activate}' >> ~/.bashrc"],
        head_start_ray_commands=[
            f"HOME={home} RAY_AUTH_TOKEN_PATH={home / 'auth_token'} UAV_VENV={venv} "
            f"bash {project / 'scripts/station_ray.sh'} head 127.0.0.1"
        ],
    )
    test_yaml = tmp_path / "cluster.yaml"
    test_yaml.write_text(yaml.safe_dump(config))
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token.read_text(),
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    try:
        up = subprocess.run(
            [RAY, "up", "-y", "--no-config-cache", str(test_yaml)], env=env, capture_output=True, text=True, timeout=600
        )
        assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
        submit = [RAY, "job", "submit", "--address", "http://127.0.0.1:8265", "--working-dir", str(ROOT), "--"]
        deploy = ["python", "-m", "jobs.deploy", "--group", "up", "--replicas", "1", "--data-root", str(home / "data")]
        deadline = time.monotonic() + 60
        while True:
            job = subprocess.run(submit + deploy, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
            if "No available agent" not in job.stdout + job.stderr or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
        result = json.loads([line for line in job.stdout.splitlines() if line.startswith("{")][-1])
        assert result["stations"] == ["alpha"] and result["leader"] == 1  # the station got its resource
    finally:
        down = subprocess.run([RAY, "down", "-y", str(test_yaml)], env=env, capture_output=True, text=True, timeout=300)
        bashrc = Path.home() / ".bashrc"
        if bashrc.exists():
            bashrc.write_text("".join(line for line in bashrc.read_text().splitlines(True) if MARKER not in line))
        assert down.returncode == 0, down.stdout[-2000:] + down.stderr[-2000:]
    deadline = time.monotonic() + 30
    while not port_free(6379):  # ray down really stopped the station's Ray (its `ray stop` found `ray`)
        assert time.monotonic() < deadline, "Ray still runs on the station after ray down"
        time.sleep(0.5)
