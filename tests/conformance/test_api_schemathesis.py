"""schemathesis against the served OpenAPI document, every check (the stateful phase, which
follows the document's links from created records, included): the server takes what the
document allows, refuses what it forbids, answers only documented statuses and never 5xx.
The change stream is left out here (an endless SSE response per generated case); its tests
are in tests/unit/api."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.node_cluster import free_port

ROOT = Path(__file__).resolve().parents[2]
ST = str(Path(sys.executable).parent / "st")


def test_schemathesis_finds_nothing_with_every_check():
    port, token = free_port(), "schemathesis-token"
    server = subprocess.Popen(
        [sys.executable, "-m", "tests.api_server", str(port), token], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        run = subprocess.run(
            [
                ST, "run", f"http://127.0.0.1:{port}/openapi.json",
                "--checks", "all",
                "-H", f"Authorization: Bearer {token}",
                "--max-examples", "25", "--seed", "1",
                "--exclude-path", "/v1/changes",
            ],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
        counts = re.search(r"(\d+) generated, (\d+) passed", run.stdout)
        assert counts and counts[1] == counts[2] and int(counts[1]) > 1000, run.stdout[-3000:]  # every case passed
    finally:
        server.kill()
        server.wait()
