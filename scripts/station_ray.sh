#!/usr/bin/env bash
# Starts Ray on a drone station (cluster.yaml's start commands run it on every node).
#
#   station_ray.sh name                      print this station's resource, station:<name>
#   station_ray.sh head NODE_IP              start the head (GCS 6379, dashboard 8265)
#   station_ray.sh worker NODE_IP HEAD_IP    join the head (NODE_IP "auto": the address this
#                                            station uses to reach the head)
#
# The station's name is derived here, on the host: $UAV_STATION if set (hosts sharing one home
# directory, such as test namespaces), else the first line of ~/.uav-station if the station
# keeps one (write it once when commissioning a station), else the short hostname.
# Ray's local provider runs one start command on every worker, so the name cannot come
# from cluster.yaml.
#
# Deliberately no `ray stop`: when Ray already runs here (a second `ray up`), it is left
# alone, so Raft replicas keep running and keep their leases; restarting Ray is an explicit
# `ray down` (which does run `ray stop` for this user: run stations under a dedicated user,
# e.g. `uav`, and nothing else under it).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"

station_name() {
  local name="${UAV_STATION:-}"
  if [ -z "$name" ] && [ -s "$HOME/.uav-station" ]; then
    name="$(head -n1 "$HOME/.uav-station" | tr -d '[:space:]')"
  fi
  [ -n "$name" ] || name="$(hostname -s)"
  if ! [[ "$name" =~ ^[A-Za-z0-9._-]{1,64}$ ]]; then
    echo "station_ray.sh: station name '$name' must be 1-64 of A-Z a-z 0-9 . _ - (fix ~/.uav-station)" >&2
    exit 2
  fi
  echo "$name"
}

cmd="${1:-}"
case "$cmd" in
  name)
    name="$(station_name)"
    echo "station:$name"
    exit 0
    ;;
  head|worker) ;;
  *)
    echo "usage: station_ray.sh name | head NODE_IP | worker NODE_IP HEAD_IP" >&2
    exit 2
    ;;
esac
node_ip="${2:?NODE_IP is required}"
if [ "$node_ip" = auto ]; then
  node_ip="$(ip route get "${3:?HEAD_IP is required}" | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}')"
fi
# shellcheck source=/dev/null
source "$here/scripts/env.sh"
# env.sh keeps single-machine runs on loopback with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which
# also makes `ray start --address` refuse to join a head: a station with an address of its own
# must not have it (the ray up test across station namespaces found both).
case "$node_ip" in
  127.*) ;;
  *) unset RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER ;;
esac
# shellcheck source=/dev/null
source "${UAV_VENV:-$here/.venv}/bin/activate"
if [ ! -s "$HOME/.ray/auth_token" ] && [ -z "${RAY_AUTH_TOKEN:-}" ] && [ ! -s "${RAY_AUTH_TOKEN_PATH:-/nonexistent}" ]; then
  echo "station_ray.sh: no cluster token in ~/.ray/auth_token (cluster.yaml mounts the operator's)" >&2
  exit 2
fi
station="$(station_name)"
resources="{\"station:$station\": 1}"
# Ray's session files default to /tmp/ray: hosts sharing one /tmp (test namespaces) need
# their own, or one node's runtime-env agent rewrites files another node's driver reads.
temp_dir=()
if [ -n "${UAV_RAY_TEMP_DIR:-}" ]; then
  temp_dir=(--temp-dir="$UAV_RAY_TEMP_DIR")
fi
if [ "$cmd" = head ]; then
  if ray status --address "$node_ip:6379" >/dev/null 2>&1; then
    echo "Ray already runs on this station; leaving it (ray down restarts it)"
    exit 0
  fi
  # `ray up` leaves the cluster's config on the head: with it the head's autoscaler starts Ray
  # on the other stations (worker_ips), as Ray's own default start command does.
  # Ray 2.60's autoscaler v2 counts the head as one of the on-prem node type's min_workers
  # (one node type for head and workers) and so starts one station fewer than worker_ips; the
  # v1 autoscaler starts them all.
  autoscaling=()
  if [ -s "$HOME/ray_bootstrap_config.yaml" ]; then
    autoscaling=(--autoscaling-config="$HOME/ray_bootstrap_config.yaml")
    export RAY_enable_autoscaler_v2=0
  fi
  # Health checks every second, three misses: a lost station is noticed in ~3 s, not ~15 s,
  # so the controller's grace period starts soon after the loss.
  exec ray start --head --node-ip-address="$node_ip" --port=6379 --dashboard-host="$node_ip" \
    --include-dashboard=true --resources="$resources" --disable-usage-stats "${autoscaling[@]}" "${temp_dir[@]}" \
    --system-config='{"health_check_period_ms": 1000, "health_check_failure_threshold": 3}'
fi
head_ip="${3:?HEAD_IP is required}"
if ray status --address "$head_ip:6379" 2>/dev/null | grep -q "station:$station"; then
  echo "this station already belongs to the cluster; leaving it"
  exit 0
fi
exec ray start --address="$head_ip:6379" --node-ip-address="$node_ip" --resources="$resources" --disable-usage-stats \
  "${temp_dir[@]}"
