"""analysis/rpc_stats.py on a small dataset whose answers are known."""

from __future__ import annotations

import pandas as pd

from analysis.rpc_stats import latency_percentiles, leader_timeline, outcome_rates, retry_distribution


def frame() -> pd.DataFrame:
    t0 = pd.Timestamp("2026-01-01T00:00:00Z")
    rows = [
        # term 2: replica 1 leads, then dies (its own rows lost); followers' answers remain
        ("2", "1", "append_entries_response", 1, "ok", 1.0, 2, 0.1),
        ("3", "1", "heartbeat_response", 1, "ok", 1.0, 2, 0.2),
        # term 3: replica 2 leads
        ("2", "3", "append_entries", 1, "ok", 2.0, 3, 1.5),
        ("2", "3", "append_entries", 2, "timeout", 500.0, 3, 1.6),
        ("2", "1", "heartbeat", 1, "connection", 3.0, 3, 1.7),
        ("2", "3", "heartbeat", 1, "ok", 4.0, 3, 2.5),
    ]
    return pd.DataFrame(
        [
            {
                "source": s, "target": t, "method": m, "attempt": a, "outcome": o, "latency_ms": lat, "term": term,
                "time": t0 + pd.Timedelta(seconds=sec),
            }
            for s, t, m, a, o, lat, term, sec in rows
        ]
    )  # fmt: skip


def test_leaders_come_from_senders_and_from_whom_followers_answer():
    timeline = leader_timeline(frame())
    assert timeline[["term", "leader"]].values.tolist() == [[2, "1"], [3, "2"]]


def test_rates_retries_and_latency_windows():
    rates = outcome_rates(frame()).set_index(["target", "method"])
    assert rates.loc[("3", "append_entries"), "timeout_rate"] == 0.5
    assert rates.loc[("1", "heartbeat"), "failure_rate"] == 1.0
    retries = retry_distribution(frame())
    assert retries.loc[2, "append_entries"] == 1 and retries.loc[1, "append_entries"] == 1
    windows = latency_percentiles(frame(), "1s")
    assert windows["attempts"].tolist() == [2, 1, 1]  # ok attempts in seconds 0, 1 and 2
    assert latency_percentiles(frame(), "1s", "heartbeat")["p50"].tolist() == [4.0]  # the only ok one
