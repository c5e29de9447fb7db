"""Output for people and for scripts: aligned tables, a progress bar on stderr, one JSON
document on stdout with --json. Shared by the `controlplane` command and the jobs."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any


def progress(done: int, total: int, what: str, started: float) -> None:
    """One line per call on stderr (it shows in `ray job logs` too); scripts read stdout."""
    rate = done / max(1e-9, time.monotonic() - started)
    width = 30
    filled = int(width * done / max(1, total))
    print(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {what} ({rate:.0f}/s)", file=sys.stderr, flush=True)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value) or "-"
    return str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def emit_json(value: Any) -> None:
    print(json.dumps(value, default=str), flush=True)
