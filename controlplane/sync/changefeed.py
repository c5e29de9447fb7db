"""ChangeFeed: incremental sync. Wraps a replica's FleetState (it is the state machine the
RaftNode applies to), keeps the changes of the most recent log entries in memory, and
answers `changes_since(index, kinds)`: every change after `index`, or, when that index has
left the window (or a snapshot replaced the state), the current records as a reset.

A change is {"index", "kind", "id", "record"} with record None when the record was deleted;
telemetry batches are summarised as {"index", "kind": "telemetry", counts..., "applied_at"}.
"""

from __future__ import annotations

import asyncio
import marshal
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from controlplane.raft.messages import Entry
from controlplane.state.fleet import FleetState

KINDS = frozenset({"station", "uav", "mission", "group", "telemetry"})


def parse_kinds(kinds: Iterable[str] | None) -> frozenset[str]:
    wanted = KINDS if kinds is None else frozenset(kinds)
    unknown = wanted - KINDS
    if unknown or not wanted:
        raise ValueError(f"kinds must be a non-empty subset of {sorted(KINDS)}, got {sorted(wanted)}")
    return wanted


class _Kept(NamedTuple):
    """A change as the window keeps it: the record's values marshalled beside its field
    names (None: deleted), or a telemetry batch's counts. A dict per change holding the
    record's dict took ~4x the memory (~40 MB for a window of a 100k fleet's changes), and
    readers are few; marshal packs as small as compact JSON at a quarter of its CPU (every
    replica packs every change; the bytes never leave this process). The names are one
    tuple per record shape, shared: marshalling them with every record was ~40 % of its
    bytes."""

    log_index: int
    kind: str
    id: str | None
    fields: tuple[str, ...]
    payload: Any

    def unpacked(self) -> dict[str, Any]:
        if self.kind == "telemetry":
            return {**self.payload, "kind": "telemetry"}
        record = None if self.payload is None else dict(zip(self.fields, marshal.loads(self.payload), strict=True))
        return {"index": self.log_index, "kind": self.kind, "id": self.id, "record": record}


class ChangeFeed:
    def __init__(self, state: FleetState, *, window: int = 50_000, clock: Callable[[], float] = time.time) -> None:
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.state = state
        state.track_changes = True
        self.window = window
        self._clock = clock
        self._changes: deque[_Kept] = deque()
        self._shapes: dict[tuple[str, ...], tuple[str, ...]] = {}  # a few per kind: the code's
        # Changes of every entry after `horizon` are in the window.
        self.horizon = state.applied_index
        self._new = asyncio.Event()

    # --- the StateMachine the node applies to --------------------------------------------

    def apply(self, entry: Entry) -> Any:
        answer = self.state.apply(entry)
        changed, telemetry = self.state.drain_changes()
        for kind, record_id in changed:
            found = self.state.record_values(kind, record_id)
            if found is None:
                self._changes.append(_Kept(entry.index, kind, record_id, (), None))
                continue
            fields, values = found
            fields = self._shapes.setdefault(fields, fields)
            self._changes.append(_Kept(entry.index, kind, record_id, fields, marshal.dumps(values)))
        if telemetry:
            applied_at = self._clock()
            for counts in telemetry:
                self._changes.append(
                    _Kept(counts["index"], "telemetry", None, (), {**counts, "applied_at": applied_at})
                )
        self._trim()
        if changed or telemetry:
            self._notify()
        return answer

    def snapshot(self) -> bytes:
        return self.state.snapshot()

    def prepare_snapshot(self) -> Callable[[], bytes]:
        return self.state.prepare_snapshot()

    def restore(self, data: bytes) -> None:
        self.prepare_restore(data)()

    def prepare_restore(self, data: bytes) -> Callable[[], None]:
        install_state = self.state.prepare_restore(data)

        def install() -> None:
            install_state()
            self._changes.clear()
            self.horizon = self.state.applied_index
            self._notify()

        return install

    def _trim(self) -> None:
        while len(self._changes) > self.window:
            dropped = self._changes.popleft().log_index
            while self._changes and self._changes[0].log_index == dropped:
                self._changes.popleft()
            self.horizon = dropped

    def _notify(self) -> None:
        self._new.set()

    # --- reading ----------------------------------------------------------------------------

    def changes_since(self, index: int, kinds: Iterable[str] | None = None, limit: int = 10_000) -> dict[str, Any]:
        """{"reset": False, "index": last index covered, "changes": [...]} or, when `index` is
        older than the window, {"reset": True, "index": applied, "changes": every record}."""
        wanted = parse_kinds(kinds)
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        if limit < 1:
            raise ValueError(f"limit must be positive, got {limit}")
        applied = self.state.applied_index
        if index < self.horizon:
            return {"reset": True, "index": applied, "changes": self._everything(wanted, applied)}
        kept: list[_Kept] = []
        last = applied
        for change in reversed(self._changes):  # newest first: stop at `index`
            if change.log_index <= index:
                break
            if change.kind in wanted:
                kept.append(change)
        kept.reverse()
        if len(kept) > limit:  # cut at an entry boundary so the next call resumes cleanly
            last = kept[limit - 1].log_index
            kept = [c for c in kept if c.log_index <= last]
        return {"reset": False, "index": max(last, index), "changes": [c.unpacked() for c in kept]}

    def _everything(self, wanted: frozenset[str], index: int) -> list[dict[str, Any]]:
        s = self.state
        ids: dict[str, Iterable[str]] = {
            "station": sorted(s.stations),
            "uav": sorted(s.uavs),
            "mission": sorted(s.missions),
            "group": sorted(s.groups),
        }
        return [
            {"index": index, "kind": kind, "id": record_id, "record": s.record(kind, record_id)}
            for kind in sorted(wanted - {"telemetry"})
            for record_id in ids[kind]
        ]

    async def wait(self, index: int, kinds: Iterable[str] | None = None, timeout: float = 10.0) -> dict[str, Any]:
        """changes_since(), waiting up to `timeout` seconds for a change when there is none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            self._new.clear()
            answer = self.changes_since(index, kinds)
            remaining = deadline - loop.time()
            if answer["changes"] or answer["reset"] or remaining <= 0:
                return answer
            try:
                await asyncio.wait_for(self._new.wait(), remaining)
            except TimeoutError:
                return self.changes_since(index, kinds)
