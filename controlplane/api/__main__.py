"""python -m controlplane.api: serve the fleet HTTP API (see api/server.py)."""

import sys

from controlplane.api.server import main

if __name__ == "__main__":
    sys.exit(main())
