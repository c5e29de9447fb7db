"""Keeping a replica's resident memory down (issue 14: a replica holding 100,000 UAVs and
100,000 missions within 300 MB).

- pyarrow imports pandas (when installed) on its first conversion of Python values, only to
  recognise pandas inputs: ~58 MB in every replica for nothing. `lean_arrow()` lets that
  first probe find no pandas; pyarrow imports it for real when something asks for pandas
  itself (Table.to_pandas, Table.from_pandas), so those still work.
- Arrow's default pool (mimalloc) kept ~70 MB of pages after each snapshot of a 100k fleet,
  growing with every snapshot; the system allocator gives them back (with
  `release_free_memory()` after the snapshot: measured back to the level before it).
- Python's full collections walk every tracked object, and a started replica holds ~95,000
  of them from its imports alone (Ray, Arrow, aiohttp): each full collection stopped its
  event loop for 85-106 ms here (134 ms holding 100k UAVs and missions), heartbeats and
  answers included. `freeze_started_process()` moves what exists once the replica serves
  (the modules, a restored fleet) out of the collector's sight.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import importlib.abc
import sys
from collections.abc import Callable, Sequence
from types import ModuleType

import pyarrow as pa


class _NoPandas(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Sequence[str] | None, target: ModuleType | None = None) -> None:
        if name == "pandas":
            raise ModuleNotFoundError("pandas is not probed for here", name="pandas")


def lean_arrow() -> None:
    """Once per replica process, before its first Arrow conversion."""
    pa.set_memory_pool(pa.system_memory_pool())
    if "pandas" in sys.modules:
        return  # already paid for
    finder = _NoPandas()
    sys.meta_path.insert(0, finder)
    try:
        pa.array([0])
    finally:
        sys.meta_path.remove(finder)


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # not glibc: nothing to call
        return None
    return trim


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the allocator's free pages back to the system (after a snapshot is written or
    decoded: tens of MB of temporaries)."""
    if _TRIM is not None:
        _TRIM(0)


def freeze_started_process() -> int:
    """Once per replica process, when it serves: what exists then lives as long as the
    process, so full collections stop walking it (gc.freeze). Nothing is collected first: a
    collection here would cost the restart the very pause this saves. A frozen object is
    still freed when its last reference goes; only a reference cycle among them would stay,
    and the fleet's records and the loaded modules hold none that die. Returns how many
    objects are frozen."""
    gc.freeze()
    return gc.get_freeze_count()
