#!/usr/bin/env bash
# Ensures an etcd server (Debian etcd-server) listens on 127.0.0.1:$ETCD_PORT with its data in
# a temporary directory; prints the PID of the server it started ("" if one was running).
set -euo pipefail
port="${ETCD_PORT:-23790}"
if ! command -v etcd >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    echo "[etcd] installing etcd-server" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server) >&2
  else
    echo "[etcd] etcd is not installed; run: sudo apt-get install -y etcd-server" >&2
    exit 1
  fi
fi
if curl -fsS "http://127.0.0.1:${port}/health" >/dev/null 2>&1; then
  echo ""
  exit 0
fi
dir=$(mktemp -d -t uav-etcd.XXXXXX)
etcd --name uav-test --data-dir "$dir" \
  --listen-client-urls "http://127.0.0.1:${port}" --advertise-client-urls "http://127.0.0.1:${port}" \
  --listen-peer-urls "http://127.0.0.1:$((port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-cluster "uav-test=http://127.0.0.1:$((port + 1))" >"$dir/etcd.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  if curl -fsS "http://127.0.0.1:${port}/health" >/dev/null 2>&1; then
    echo "$pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then break; fi
  sleep 0.1
done
echo "[etcd] did not become healthy; log:" >&2
cat "$dir/etcd.log" >&2
exit 1
