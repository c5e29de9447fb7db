"""Load the replicas' RPC statistics (rotated Parquet files) into one pandas DataFrame.

    from analysis.rpc_stats import load_rpc_stats
    df = load_rpc_stats("/path/to/data-dir")   # every rpc-stats-*.parquet below it

Columns follow controlplane.rpc.stats.SCHEMA: time, source, target, method, attempt,
outcome, error_type, latency_ms, request_bytes, response_bytes, entries, term.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from controlplane.rpc.stats import SCHEMA


def load_rpc_stats(root: str | Path) -> pd.DataFrame:
    files = sorted(Path(root).rglob("rpc-stats-*.parquet"))
    if not files:
        return SCHEMA.empty_table().to_pandas()
    tables = [pq.read_table(f, schema=SCHEMA) for f in files]
    return pa.concat_tables(tables).to_pandas()
