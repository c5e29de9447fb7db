"""The column rows of the UAV ids a telemetry segment names (its uav column's dictionary).

Every replica looks up every segment's ids. The lookup is one vectorized hash join between
the segment's ids and the known ones (~0.6 ms for a station's 3,333 ids among 10k known);
a station reporting the same UAVs tick after tick sends the same dictionary each time
(encode_segment sorts it), so the rows of the last few dictionaries are kept and a repeat
costs one comparison of the arrays. A registration or deletion moves rows: the owner then
drops this whole object (FleetState keeps it only while the UAV set is unchanged).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from controlplane.state.model import UAV
from controlplane.state.telemetry import int_values

# Dictionaries whose rows are kept: one per station reporting, for a few stations per group.
DICTIONARIES_KEPT = 8


class IdRows:
    def __init__(self, uavs: Iterable[UAV]) -> None:
        known = list(uavs)
        self.names = pa.array([u.id for u in known], pa.string())
        self.rows = np.fromiter((u.row for u in known), dtype=np.int64, count=len(known))
        self._seen: list[tuple[pa.Array, np.ndarray]] = []  # most recent first

    def of(self, ids: pa.Array) -> np.ndarray:
        """Each id's row, -1 for an unknown id (or a null); a new array the caller may change."""
        for i, (seen, rows) in enumerate(self._seen):
            if len(seen) == len(ids) and seen.equals(ids):
                if i:
                    self._seen.insert(0, self._seen.pop(i))
                return rows.copy()
        rows = self._look_up(ids)
        self._seen.insert(0, (ids, rows))
        del self._seen[DICTIONARIES_KEPT:]
        return rows.copy()

    def _look_up(self, ids: pa.Array) -> np.ndarray:
        import pyarrow.compute as pc  # ~85 ms of a process's start: imported where used

        # Hash the segment's few ids and probe every known one: hashing all known ids for each
        # segment cost 5x more at 100k UAVs (a set lookup rebuilds its hash on every call).
        position = pc.index_in(self.names, value_set=ids)
        found = position.is_valid().to_numpy(zero_copy_only=False)
        out = np.full(len(ids), -1, dtype=np.int64)
        out[position.drop_null().to_numpy()] = self.rows[found]
        missing = np.nonzero(out < 0)[0]
        if len(missing):  # unknown ids, or an id a forged dictionary names twice: each looked up
            look_up = pc.index_in(ids.take(pa.array(missing)), value_set=self.names)
            out[missing] = np.append(self.rows, -1)[int_values(look_up, -1)]  # -1 (not known): last slot
        return out
