"""python -m controlplane: the `controlplane` command (controlplane/cli.py)."""

from __future__ import annotations

import sys

from controlplane.cli import main

if __name__ == "__main__":
    sys.exit(main())
