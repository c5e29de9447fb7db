"""FleetState snapshots as Arrow IPC: one columnar table per record kind (UAVs, missions,
their waypoints flattened, group members, stations, control records, sessions), zstd-compressed, in a small
container: b"FLT1", u32 table count, then per table u16 name length, name, u64 length, IPC
stream. Columnar tables make 100,000-UAV snapshots fast to write and restore."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa  # pyarrow.compute is imported where used: ~85 ms of a process's start

from controlplane.state.model import WAYPOINT_BYTES

if TYPE_CHECKING:
    from controlplane.state.fleet import FleetState

MAGIC = b"FLT1"
# On one thread: Arrow's pool cost ~30 % more CPU writing a 100k fleet's snapshot here
# (0.34-0.36 -> 0.25-0.27 s of CPU), beside replicas that keep every core busy.
_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd", use_threads=False)


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_OPTIONS) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def encode_state(state: FleetState) -> bytes:
    uavs = [state.uavs[k] for k in sorted(state.uavs)]
    rows = np.fromiter((u.row for u in uavs), dtype=np.int64, count=len(uavs))
    missions = [state.missions[k] for k in sorted(state.missions)]
    groups = [state.groups[k] for k in sorted(state.groups)]
    control = state.control.rows()
    route = np.frombuffer(b"".join(m.route for m in missions), dtype=np.float64)
    tables = {
        "stations": pa.table({"name": pa.array(sorted(state.stations), pa.string())}),
        "uavs": pa.table(
            {
                "id": pa.array([u.id for u in uavs], pa.string()),
                "home_station": pa.array([u.home_station for u in uavs], pa.string()).dictionary_encode(),
                "status": pa.array([u.status.value for u in uavs], pa.string()).dictionary_encode(),
                "mission": pa.array([u.mission for u in uavs], pa.string()),
                "version": pa.array([u.version for u in uavs], pa.int64()),
                **{name: pa.array(column[rows]) for name, column in state.columns.floats.items()},
                "report_time": pa.array(state.columns.report_time[rows]),
                "report_seq": pa.array(state.columns.report_seq[rows]),
            }
        ),
        "missions": pa.table(
            {
                "id": pa.array([m.id for m in missions], pa.string()),
                "priority": pa.array([m.priority for m in missions], pa.int64()),
                "min_battery": pa.array([m.min_battery for m in missions], pa.float64()),
                "status": pa.array([m.status.value for m in missions], pa.string()).dictionary_encode(),
                "uav": pa.array([m.uav for m in missions], pa.string()),
                "created_index": pa.array([m.created_index for m in missions], pa.int64()),
                "version": pa.array([m.version for m in missions], pa.int64()),
                "waypoints": pa.array([len(m.route) // WAYPOINT_BYTES for m in missions], pa.int32()),
            }
        ),
        "waypoints": pa.table({"lat": route[0::3], "lon": route[1::3], "alt": route[2::3]}),
        "groups": pa.table(
            {
                "id": pa.array([g.id for g in groups], pa.string()),
                "version": pa.array([g.version for g in groups], pa.int64()),
                "members": pa.array([len(g.members) for g in groups], pa.int32()),
            }
        ),
        "group_members": pa.table({"uav": pa.array([u for g in groups for u in sorted(g.members)], pa.string())}),
        "control": pa.table(
            {
                "key": pa.array([r.key for r in control], pa.string()),
                "value": pa.array([r.value for r in control], pa.string()),
                "version": pa.array([r.version for r in control], pa.int64()),
            }
        ),
        "meta": pa.table(
            {
                # in least-recently-used order: expiry depends on it
                "sessions": pa.array([state.sessions.to_json()]),
                "rejections": pa.array([state.rejections], pa.int64()),
                "applied_index": pa.array([state.applied_index], pa.int64()),
                "telemetry": pa.array([json.dumps(state.telemetry.to_dict())]),
            }
        ),
    }
    out = [MAGIC, struct.pack("<I", len(tables))]
    for name, table in tables.items():
        body = _ipc(table)
        out += [struct.pack("<H", len(name)), name.encode(), struct.pack("<Q", len(body)), body]
    return b"".join(out)


def decode_tables(data: bytes) -> dict[str, pa.Table]:
    if data[:4] != MAGIC:
        raise ValueError(f"not a fleet snapshot (magic {data[:4]!r})")
    (count,) = struct.unpack_from("<I", data, 4)
    pos, tables = 8, {}
    for _ in range(count):
        (n,) = struct.unpack_from("<H", data, pos)
        name = data[pos + 2 : pos + 2 + n].decode()
        (size,) = struct.unpack_from("<Q", data, pos + 2 + n)
        start = pos + 10 + n
        if start + size > len(data):
            raise ValueError(f"fleet snapshot truncated in table {name!r}")
        tables[name] = pa.ipc.open_stream(pa.py_buffer(data[start : start + size])).read_all()
        pos = start + size
    return tables


def _slices(table: pa.Table, rows: int = 8192) -> Iterator[dict[str, list[Any]]]:
    """A table as Python values, a slice at a time. Restoring runs in a worker thread beside
    the event loop; one conversion of 100,000 rows would hold the GIL (and stop the loop)
    for most of a second, a slice at a time lets the loop in between."""
    for start in range(0, table.num_rows, rows):
        yield table.slice(start, rows).to_pydict()


def _shared_values(column: pa.ChunkedArray, convert: Callable[[Any], Any]) -> list[Any]:
    """A column of few distinct values (statuses, stations) as one Python object per row,
    each distinct value converted once and shared: ~20x faster than converting every row."""
    if not pa.types.is_dictionary(column.type):  # snapshots store these encoded already
        import pyarrow.compute as pc

        column = pc.dictionary_encode(column)
    out: list[Any] = []
    for chunk in column.chunks:
        values = [convert(v) for v in chunk.dictionary.to_pylist()]
        out += [values[code] for code in chunk.indices.to_numpy(zero_copy_only=False).tolist()]
    return out


def decode_state(data: bytes, state: FleetState) -> None:
    from controlplane.state.columns import UAVColumns
    from controlplane.state.control_kv import ControlRecord
    from controlplane.state.model import UAV, Group, Mission, MissionStatus, UAVStatus
    from controlplane.state.telemetry import TelemetryCounts

    t = decode_tables(data)
    state.stations = set(t["stations"].column("name").to_pylist())
    uavs = t["uavs"]
    n = uavs.num_rows
    columns = UAVColumns(capacity=max(1024, n))
    for name in columns.floats:
        columns.floats[name][:n] = uavs.column(name).to_numpy()
    columns.report_time[:n] = uavs.column("report_time").to_numpy()
    columns.report_seq[:n] = uavs.column("report_seq").to_numpy()
    state.columns = columns
    state.uavs = {}
    homes = _shared_values(uavs.column("home_station"), sys.intern)
    uav_statuses = _shared_values(uavs.column("status"), UAVStatus)
    versions = uavs.column("version").to_numpy().tolist()
    row = 0
    for u in _slices(uavs.select(["id", "mission"])):
        for uid, mission in zip(u["id"], u["mission"], strict=True):
            state.uavs[uid] = UAV(uid, homes[row], row, uav_statuses[row], mission, versions[row])
            row += 1
    columns.reserve(list(state.uavs))
    missions = t["missions"]
    w = t["waypoints"]
    routes = np.column_stack([w.column(k).to_numpy() for k in ("lat", "lon", "alt")]).tobytes()
    ends = (np.cumsum(missions.column("waypoints").to_numpy(), dtype=np.int64) * WAYPOINT_BYTES).tolist()
    numbers = {
        k: missions.column(k).to_numpy().tolist() for k in ("priority", "min_battery", "created_index", "version")
    }
    mission_statuses = _shared_values(missions.column("status"), MissionStatus)
    state.missions, i, start = {}, 0, 0
    for m in _slices(missions.select(["id", "uav"])):
        for mid, uav in zip(m["id"], m["uav"], strict=True):
            state.missions[mid] = Mission(
                mid, routes[start : ends[i]], numbers["priority"][i], numbers["min_battery"][i], mission_statuses[i],
                uav, numbers["created_index"][i], numbers["version"][i],
            )  # fmt: skip
            start = ends[i]
            i += 1
    g: dict[str, list[Any]] = t["groups"].to_pydict()
    members = t["group_members"].column("uav").to_pylist()
    state.groups, pos = {}, 0
    for gid, version, count in zip(g["id"], g["version"], g["members"], strict=True):
        state.groups[gid] = Group(gid, set(members[pos : pos + count]), version)
        pos += count
    if "control" in t:  # snapshots written before the control records existed have none
        c = t["control"].to_pydict()
        state.control.load([ControlRecord(k, v, n) for k, v, n in zip(c["key"], c["value"], c["version"], strict=True)])
    meta = t["meta"].to_pydict()
    state.sessions.load_json(meta["sessions"][0])
    state.rejections = int(meta["rejections"][0])
    state.applied_index = int(meta["applied_index"][0])
    state.telemetry = TelemetryCounts(**json.loads(meta["telemetry"][0]))
