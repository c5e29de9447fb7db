"""The replicas' RPC statistics (rotated Parquet files) in pandas, and the views of them
the notebook (analysis/rpc_stats.ipynb) plots.

    from analysis.rpc_stats import load_rpc_stats, outcome_rates, latency_percentiles
    df = load_rpc_stats("/path/to/dataset")   # every rpc-stats-*.parquet below it
    df = load_rpc_stats("/path/to/dataset", since="2026-12-01T22:00Z", until="2026-12-01T23:00Z")
    outcome_rates(df); latency_percentiles(df, "1s"); retry_distribution(df); leader_timeline(df)

Columns follow controlplane.rpc.stats.SCHEMA: time, source, target, method, attempt,
outcome, error_type, latency_ms, request_bytes, response_bytes, entries, term.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from controlplane.rpc.stats import SCHEMA
from controlplane.rpc.stats_files import parse_time, read_window


def load_rpc_stats(root: str | Path, since: Any = None, until: Any = None) -> pd.DataFrame:
    """Every RPC attempt recorded under `root` (a node's rpc-stats directory, or an exported
    dataset), optionally only since <= time < until: epoch seconds, a datetime or pandas
    Timestamp, or text (ISO 8601, or a duration back from now such as "2h")."""
    files = sorted(Path(root).rglob("rpc-stats-*.parquet"))
    table = read_window(files, _seconds(since), _seconds(until)) if files else None
    if table is None:
        return SCHEMA.empty_table().to_pandas()
    return table.cast(SCHEMA).to_pandas()


def _seconds(moment: Any) -> float | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        return parse_time(moment)
    if isinstance(moment, int | float):
        return float(moment)
    return float(pd.Timestamp(moment).timestamp())


def outcome_rates(df: pd.DataFrame) -> pd.DataFrame:
    """Per (target, method): attempts and the share that succeeded, timed out or failed."""
    if df.empty:
        return pd.DataFrame(columns=["target", "method", "attempts", "ok_rate", "timeout_rate", "failure_rate"])
    flags = df.assign(
        ok=df["outcome"].eq("ok"),
        timeout=df["outcome"].eq("timeout"),
        failure=~df["outcome"].isin(["ok", "timeout"]),
    )
    out = flags.groupby(["target", "method"]).agg(
        attempts=("outcome", "size"),
        ok_rate=("ok", "mean"),
        timeout_rate=("timeout", "mean"),
        failure_rate=("failure", "mean"),
    )
    return out.reset_index()


def latency_percentiles(df: pd.DataFrame, window: str = "1s", method: str | None = None) -> pd.DataFrame:
    """p50 / p90 / p99 latency (ms) of successful attempts per time window."""
    ok = df[df["outcome"].eq("ok") & (df["method"].eq(method) if method else True)]
    if ok.empty:
        return pd.DataFrame(columns=["p50", "p90", "p99", "attempts"])
    grouped = ok.set_index("time")["latency_ms"].resample(window)
    return pd.DataFrame(
        {
            "p50": grouped.quantile(0.5),
            "p90": grouped.quantile(0.9),
            "p99": grouped.quantile(0.99),
            "attempts": grouped.size(),
        }
    ).dropna(subset=["p50"])


def retry_distribution(df: pd.DataFrame) -> pd.DataFrame:
    """How many attempts each call needed: counts of attempt numbers per method (attempt 1
    is the first try; a row with attempt 3 is the second retry)."""
    if df.empty:
        return pd.DataFrame()
    return df.pivot_table(index="attempt", columns="method", values="outcome", aggfunc="size", fill_value=0)


def leader_timeline(df: pd.DataFrame) -> pd.DataFrame:
    """One row per term with a leader, and when it was first and last seen leading: the
    leader is who sends AppendEntries/heartbeats in that term, and whom followers answer
    (so a leader whose own stats died with it still shows)."""
    sent = df[df["method"].isin(["append_entries", "heartbeat"])][["term", "source", "time"]]
    answered = df[df["method"].isin(["append_entries_response", "heartbeat_response"])][["term", "target", "time"]]
    both = pd.concat([sent.rename(columns={"source": "leader"}), answered.rename(columns={"target": "leader"})])
    if both.empty:
        return pd.DataFrame(columns=["term", "leader", "first_seen", "last_seen"])
    timeline = both.groupby(["term", "leader"])["time"].agg(first_seen="min", last_seen="max").reset_index()
    return timeline.sort_values(["term", "first_seen"]).reset_index(drop=True)
