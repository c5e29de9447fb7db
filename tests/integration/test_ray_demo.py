"""The main job end to end on real Ray: deploy, write, kill the leader actor, re-elect,
recover the killed replica from its disk, export RPC stats to Parquet."""

import os
import subprocess
import sys
from pathlib import Path

from analysis.rpc_stats import load_rpc_stats
from controlplane.rpc.stats import SCHEMA

ROOT = Path(__file__).resolve().parents[2]


def test_demo_survives_leader_kill_and_exports_stats(tmp_path):
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0")
    env.setdefault("RAY_AUTH_MODE", "token")
    proc = subprocess.run(
        [sys.executable, "-m", "controlplane", "demo", "--writes", "20", "--data-dir", str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    assert "all 40 acknowledged registrations read back linearizably from the new leader" in out
    assert "recovered" in out and "caught up" in out
    assert "telemetry: 94 reports from 3 station ingest actors, 80 applied, 14 duplicates dropped" in out
    assert "replicas hold identical tables" in out
    wal = list(tmp_path.rglob("wal-*.log"))
    assert len({p.parent.parent for p in wal}) == 3  # each replica kept its own log on disk
    df = load_rpc_stats(tmp_path)
    assert list(df.columns) == SCHEMA.names
    assert len(df) > 0 and df["source"].nunique() == 3
    assert {"heartbeat", "append_entries"} <= set(df["method"])

    # The notebook runs headless on this real run's stats and writes its plots.
    from analysis.run_notebook import execute

    figures = execute(tmp_path, tmp_path / "figures", tmp_path / "rpc_stats.executed.ipynb")
    assert [f.name for f in figures] == ["latency.png", "leaders.png", "outcomes.png", "retries.png"]
    assert all(f.stat().st_size > 5_000 for f in figures)
