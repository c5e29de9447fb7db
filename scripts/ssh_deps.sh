#!/usr/bin/env bash
# Installs what the `ray up` end-to-end test needs: an SSH server (started by the test itself,
# on 127.0.0.1 only) and rsync (ray up copies the project with it).
set -euo pipefail
if [ -x /usr/sbin/sshd ] && command -v rsync >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "[ssh] openssh-server/rsync missing; run: sudo apt-get install -y openssh-server rsync" >&2
  exit 0  # the test then skips, loudly
fi
echo "[ssh] installing openssh-server and rsync" >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server rsync) >&2
# The package may try to start a system-wide sshd; the test runs its own on 127.0.0.1.
pkill -x sshd 2>/dev/null || true
