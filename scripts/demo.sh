#!/usr/bin/env bash
# The main job: a 3-replica Raft group as detached Ray actors on three virtual stations,
# writes, the leader killed, failover, recovery from disk, RPC stats to Parquet.
# Extra arguments go to `python -m controlplane demo` (e.g. --data-dir DIR --writes N).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source scripts/env.sh
exec .venv/bin/python -m controlplane demo "$@"
