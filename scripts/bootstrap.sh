#!/usr/bin/env bash
# Creates .venv and installs requirements.txt into it; a no-op when already up to date.
set -euo pipefail
cd "$(dirname "$0")/.."
stamp=.venv/.requirements.sha256
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[bootstrap] installing requirements into .venv (first run takes one to two minutes)" >&2
  python3 -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
# The `controlplane` command (python -m controlplane from this checkout, wherever it runs).
cat > .venv/bin/controlplane <<WRAPPER
#!/usr/bin/env bash
PYTHONPATH="$(pwd)\${PYTHONPATH:+:\$PYTHONPATH}" exec "$(pwd)/.venv/bin/python" -m controlplane "\$@"
WRAPPER
chmod +x .venv/bin/controlplane
