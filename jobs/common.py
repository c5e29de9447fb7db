"""Plumbing the jobs share: attaching to the cluster, progress, the JSON result line."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from controlplane.console import emit_json, progress

__all__ = ["EXIT_OK", "EXIT_PARTIAL", "EXIT_USAGE", "attach", "finish", "progress", "run"]

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def attach(address: str = "auto") -> None:
    """Join the running Ray cluster (inside `ray job submit`, "auto" finds it)."""
    from controlplane.client import attach as attach_cluster

    attach_cluster(address)


def finish(result: dict[str, Any], ok: bool = True) -> int:
    emit_json(result)
    return EXIT_OK if ok else EXIT_PARTIAL


def run(coro: Coroutine[Any, Any, int]) -> int:
    return asyncio.run(coro)
