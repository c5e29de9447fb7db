"""UAVColumns: the UAVs' kinematics and last report, one numpy column per field, one row
per UAV. Telemetry arrives at up to millions of reports a second; keeping it columnar lets
the state machine apply a whole batch with a few vectorized operations (state/telemetry.py)
and lets the scheduler compare every idle UAV at once."""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

import numpy as np

# Fields a telemetry report carries (besides uav, time, seq), with their valid ranges.
KINEMATICS: dict[str, tuple[float, float]] = {
    "lat": (-90.0, 90.0),
    "lon": (-180.0, 180.0),
    "alt": (-500.0, 10_000.0),
    "battery": (0.0, 100.0),
    "vx": (-200.0, 200.0),  # m/s, north
    "vy": (-200.0, 200.0),  # m/s, east
    "vz": (-200.0, 200.0),  # m/s, down (PX4's NED frame)
}
DEFAULTS: dict[str, float] = {"lat": 0.0, "lon": 0.0, "alt": 0.0, "battery": 100.0, "vx": 0.0, "vy": 0.0, "vz": 0.0}
# "No report yet": any real report is newer.
NO_TIME = -np.inf
# A row's values as UAVColumns.values gives them.
ROW_FIELDS = (*KINEMATICS, "report_time", "report_seq")


class UAVColumns:
    def __init__(self, capacity: int = 1024) -> None:
        # One row of KINEMATICS per UAV, so that a UAV's record is read in one call (every
        # replica reads each changed UAV's for the change feed); `floats` names its columns.
        self.kinematics = np.zeros((capacity, len(KINEMATICS)))
        self.floats = self._columns()
        self.report_time = np.full(capacity, NO_TIME)
        self.report_seq = np.full(capacity, -1, dtype=np.int64)
        # The UAV at each row (None: free), and the rows the scheduler may assign: the
        # scheduler compares every idle UAV at once without walking Python objects.
        self.ids = np.full(capacity, None, dtype=object)
        self.idle = np.zeros(capacity, dtype=bool)  # written through set_idle, which counts them
        self.idle_count = 0
        self._next_row = 0  # rows at or above it were never taken
        self._freed: list[int] = []  # a heap of released rows, all below _next_row

    @property
    def capacity(self) -> int:
        return len(self.report_time)

    def allocate(self, uav_id: str, values: dict[str, float]) -> int:
        """A row for a new UAV (the lowest free one, so every replica picks the same)."""
        if self._freed:
            row = heapq.heappop(self._freed)
        else:
            if self._next_row == self.capacity:
                self._grow()
            row, self._next_row = self._next_row, self._next_row + 1
        for name, column in self.floats.items():
            column[row] = float(values.get(name, DEFAULTS[name]))
        self.report_time[row] = NO_TIME
        self.report_seq[row] = -1
        self.ids[row] = uav_id
        return row

    def reserve(self, ids: list[str]) -> None:
        """Rows 0..len(ids)-1 are taken by these UAVs (filled directly, as a snapshot restore does)."""
        self.ids[: len(ids)] = ids
        self._next_row, self._freed = len(ids), []

    def release(self, row: int) -> None:
        self.ids[row] = None
        self.set_idle(row, False)
        heapq.heappush(self._freed, row)

    def mark_idle(self, rows: list[int]) -> None:
        """These rows idle, at once (a restored state's)."""
        self.idle[rows] = True
        self.idle_count = int(np.count_nonzero(self.idle))

    def set_idle(self, row: int, idle: bool) -> None:
        if self.idle[row] != idle:
            self.idle[row] = idle
            self.idle_count += 1 if idle else -1

    def _columns(self) -> dict[str, np.ndarray]:
        return {name: self.kinematics[:, j] for j, name in enumerate(KINEMATICS)}

    def _grow(self) -> None:
        old = self.capacity
        new = max(1024, old * 2)
        self.kinematics = np.concatenate([self.kinematics, np.zeros((new - old, len(KINEMATICS)))])
        self.floats = self._columns()
        self.report_time = np.concatenate([self.report_time, np.full(new - old, NO_TIME)])
        self.report_seq = np.concatenate([self.report_seq, np.full(new - old, -1, dtype=np.int64)])
        self.ids = np.concatenate([self.ids, np.full(new - old, None, dtype=object)])
        self.idle = np.concatenate([self.idle, np.zeros(new - old, dtype=bool)])

    def values(self, row: int) -> tuple[Any, ...]:
        """The row's values in ROW_FIELDS order (report time and seq None before any report)."""
        # .item(): the Python float (int) straight from the array, without a NumPy scalar between.
        t = self.report_time.item(row)
        report = (None, None) if t == NO_TIME else (t, self.report_seq.item(row))
        return (*self.kinematics[row].tolist(), *report)

    def set(self, row: int, values: Mapping[str, Any]) -> None:
        """The row's kinematics named in `values` (validated numbers; other keys are ignored,
        absent kinematics keep their value)."""
        try:
            # Every update with all of them (the usual report) in one assignment of the row.
            self.kinematics[row] = [values[name] for name in KINEMATICS]
        except KeyError:
            for name in KINEMATICS:
                if name in values:
                    self.floats[name][row] = float(values[name])

    def set_report(self, row: int, time: float | None, seq: int | None) -> None:
        self.report_time[row] = NO_TIME if time is None else time
        self.report_seq[row] = -1 if seq is None else seq
