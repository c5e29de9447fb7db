#!/usr/bin/env bash
# Installs what the live-page browser test needs: Debian's chromium and its chromedriver
# (selenium drives them headless; nothing is downloaded by the test itself).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "[browser] chromium/chromedriver missing; run: sudo apt-get install -y chromium chromium-driver" >&2
  exit 0  # the test then skips, loudly (and fails under CI=true)
fi
echo "[browser] installing chromium and chromium-driver" >&2
(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >&2
