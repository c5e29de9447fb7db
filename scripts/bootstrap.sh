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
# Bytecode for this checkout's modules, as `pip install` writes it for an installed package:
# every process (a node, a Ray worker, a test's subprocess) would otherwise compile them at
# start, ~0.3 s each here (also where PYTHONDONTWRITEBYTECODE is set). Up-to-date files are skipped.
.venv/bin/python -m compileall -q controlplane bench jobs > /dev/null
# The `controlplane` command (python -m controlplane from this checkout, wherever it runs).
cat > .venv/bin/controlplane <<WRAPPER
#!/usr/bin/env bash
PYTHONPATH="$(pwd)\${PYTHONPATH:+:\$PYTHONPATH}" exec "$(pwd)/.venv/bin/python" -m controlplane "\$@"
WRAPPER
chmod +x .venv/bin/controlplane
