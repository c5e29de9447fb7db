"""Plumbing the jobs share: attaching to the cluster, progress, the JSON result line."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections.abc import Coroutine
from typing import Any

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def attach(address: str = "auto") -> None:
    """Join the running Ray cluster (inside `ray job submit`, "auto" finds it)."""
    import ray

    from controlplane.actors import NAMESPACE

    if not ray.is_initialized():
        ray.init(address=address, namespace=NAMESPACE, logging_level=logging.ERROR, log_to_driver=False)


def progress(done: int, total: int, what: str, started: float) -> None:
    """One line per step on stderr: people see it in `ray job logs`, scripts ignore it."""
    rate = done / max(1e-9, time.monotonic() - started)
    width = 30
    filled = int(width * done / max(1, total))
    print(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what} ({rate:.0f}/s)", file=sys.stderr, flush=True)


def finish(result: dict[str, Any], ok: bool = True) -> int:
    print(json.dumps(result, default=str), flush=True)
    return EXIT_OK if ok else EXIT_PARTIAL


def run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)
