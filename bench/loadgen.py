"""Closed-loop load in one asyncio loop: `clients` tasks, each issuing its next operation as
soon as the last is answered, for `seconds`. Latency is per call, from issue to answer."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np


def summarize(latencies_s: list[float], ops: int, seconds: float, errors: int = 0, **extra: Any) -> dict[str, Any]:
    lat = np.array(latencies_s) * 1000 if latencies_s else np.array([float("nan")])
    return {
        "ops": ops,
        "ops_per_s": round(ops / seconds, 1) if seconds > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3),
        "errors": errors,
        **extra,
    }


async def closed_loop(operation: Callable[[int, int], Awaitable[int]], clients: int, seconds: float) -> dict[str, Any]:
    """operation(client, n) performs the client's n-th call and returns how many ops it did
    (a batch counts its updates). A failed call counts as an error and is not timed."""
    latencies: list[float] = []
    counts = [0, 0]  # ops, errors
    deadline = time.monotonic() + seconds

    async def client(c: int) -> None:
        n = 0
        while time.monotonic() < deadline:
            issued = time.monotonic()
            try:
                done = await operation(c, n)
            except Exception as exc:  # counted, not timed: a benchmark run keeps going
                if not counts[1]:
                    print(f"first error: {type(exc).__name__}: {exc}"[:500], file=sys.stderr)
                counts[1] += 1
                await asyncio.sleep(0.01)
                continue
            latencies.append(time.monotonic() - issued)
            counts[0] += done
            n += 1

    start = time.monotonic()
    await asyncio.gather(*(client(c) for c in range(clients)))
    return summarize(latencies, counts[0], time.monotonic() - start, counts[1], calls=len(latencies))
