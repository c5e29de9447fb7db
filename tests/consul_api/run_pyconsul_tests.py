"""Run py-consul's own KV, session, health and agent API tests (from its source
distribution) against the Consul emulator; print which pass as one JSON line.

    python -m tests.consul_api.run_pyconsul_tests [--version 1.8.0] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUITES = ("test_kv.py", "test_session.py", "test_health.py", "test_agent.py")


def fetch(version: str, workdir: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-binary",
            ":all:",
            "--no-deps",
            f"py-consul=={version}",
            "-d",
            str(workdir),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    archive = next(workdir.glob("py_consul-*.tar.gz"))
    with tarfile.open(archive) as tar:
        tar.extractall(workdir, filter="data")
    return next(p for p in workdir.iterdir() if p.is_dir() and p.name.startswith("py_consul-"))


def run(version: str, workdir: Path) -> dict[str, list[str]]:
    src = fetch(version, workdir)
    suite = workdir / "suite"
    suite.mkdir()
    shutil.copy(src / "tests" / "utils.py", suite / "pcutils.py")
    for name in SUITES:
        text = (src / "tests" / "api" / name).read_text().replace("from tests.utils import", "from pcutils import")
        (suite / name).write_text(text)
    shutil.copy(HERE / "conftest_template.py", suite / "conftest.py")
    env = {"CONSUL_EMULATOR_PATH": str(HERE.parent / "consul_emulator.py"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rA",
            "-p",
            "no:cacheprovider",
            "-o",
            "addopts=",
            "--timeout",
            "30",
            str(suite),
        ],
        cwd=suite,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    outcome: dict[str, list[str]] = {"passed": [], "failed": []}
    for line in proc.stdout.splitlines():
        m = re.match(r"^(PASSED|FAILED|ERROR) (\S+)", line)
        if m:
            outcome["passed" if m.group(1) == "PASSED" else "failed"].append(m.group(2))
    return outcome


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--version", default="1.8.0")
    p.add_argument("--workdir", type=Path)
    args = p.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="pyconsul-tests-"))
    print(json.dumps(run(args.version, workdir)))


if __name__ == "__main__":
    main()
