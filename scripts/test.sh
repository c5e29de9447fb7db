#!/usr/bin/env bash
# The test command: installs what it needs, starts etcd on 127.0.0.1, runs pytest.
# Extra arguments go to pytest (e.g. `-m slow` for the long simulation and chaos runs).
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh || exit 1
bash scripts/ssh_deps.sh || exit 1
bash scripts/browser_deps.sh || exit 1
source scripts/env.sh
export ETCD_HOST=127.0.0.1 ETCD_PORT="${ETCD_PORT:-23790}"
etcd_pid=$(bash scripts/etcd.sh) || exit 1
trap '[ -n "$etcd_pid" ] && kill "$etcd_pid" 2>/dev/null' EXIT
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(-m "not slow")
.venv/bin/python -m pytest "${args[@]}"
rc=$?
if [ $rc -eq 5 ]; then
  echo "pytest collected no tests: failing on purpose" >&2
  exit 1
fi
exit $rc
