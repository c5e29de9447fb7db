#!/usr/bin/env bash
# The main job. Until the Ray deployment lands, the demo is the deterministic simulator:
# Raft clusters under partitions, crashes, torn writes and membership changes, checked for
# safety and linearizability. Extra arguments go to `python -m controlplane.sim`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
source scripts/env.sh
exec .venv/bin/python -m controlplane.sim --seeds 200 --replicas 3,5 "$@"
