"""FleetState snapshots as Arrow IPC: one columnar table per record kind (UAVs, missions,
their waypoints flattened, group members, stations, control records, sessions), zstd-compressed, in a small
container: b"FLT1", u32 table count, then per table u16 name length, name, u64 length, IPC
stream. Columnar tables make 100,000-UAV snapshots fast to write and restore. Writing one
is two steps: capture (the records' fields copied out, while nothing is applied) and encode
(the tables and their compression, while the replica applies on)."""

from __future__ import annotations

import json
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa  # pyarrow.compute is imported where used: ~85 ms of a process's start

from controlplane.state.model import WAYPOINT_BYTES

if TYPE_CHECKING:
    from controlplane.state.control_kv import ControlRecord
    from controlplane.state.fleet import FleetState

MAGIC = b"FLT1"
# On one thread: Arrow's pool cost ~30 % more CPU writing a 100k fleet's snapshot here
# (0.34-0.36 -> 0.25-0.27 s of CPU), beside replicas that keep every core busy.
_OPTIONS = pa.ipc.IpcWriteOptions(compression="zstd", use_threads=False)
_UAV_FIELDS = ("id", "home_station", "row", "status", "mission", "version")
_MISSION_FIELDS = ("id", "route", "priority", "min_battery", "status", "uav", "created_index", "version")
# An enum member's value without Enum's Python-level property (~1 us each).
_VALUE = attrgetter("_value_")


def _columns(records: Iterable[Any], fields: tuple[str, ...]) -> dict[str, list[Any]]:
    """The records' fields, a list per field read in C (one call per field: ~8 ms at 100,000
    records, the GIL held that long at most). Lists of references to the fields' immutable
    values: ~0.8 MB per field at 100,000 records, and the encoder needs these lists anyway
    (a tuple per record instead cost ~40 MB more at the snapshot's peak)."""
    values = list(records)
    return {name: list(map(attrgetter(name), values)) for name in fields}


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema, options=_OPTIONS) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def encode_state(state: FleetState) -> bytes:
    return encode_captured(capture(state))


@dataclass(frozen=True)
class Captured:
    """A fleet's state as of one index, sharing nothing the state changes in place: records'
    fields copied out (in the dicts' order), kinematic columns copied, group members frozen.
    Capturing is the part of a snapshot that needs the state still (a replica applies
    nothing meanwhile); encoding it, most of the work, may run while the replica applies on."""

    stations: list[str]
    uavs: dict[str, list[Any]]  # _UAV_FIELDS but the row
    floats: dict[str, np.ndarray]  # the UAVs' kinematics, in the order of `uavs`
    report_time: np.ndarray
    report_seq: np.ndarray
    missions: dict[str, list[Any]]  # _MISSION_FIELDS
    groups: list[tuple[str, int, frozenset[str]]]
    control: list[ControlRecord]
    sessions: str
    rejections: int
    applied_index: int
    telemetry: str


def capture(state: FleetState) -> Captured:
    columns = state.columns
    uavs = _columns(state.uavs.values(), _UAV_FIELDS)
    rows = np.asarray(uavs.pop("row"), dtype=np.int64)
    return Captured(
        stations=list(state.stations),
        uavs=uavs,
        # fancy indexing copies (the telemetry path writes these columns in place)
        floats={name: column[rows] for name, column in columns.floats.items()},
        report_time=columns.report_time[rows],
        report_seq=columns.report_seq[rows],
        missions=_columns(state.missions.values(), _MISSION_FIELDS),
        groups=[(g.id, g.version, frozenset(g.members)) for g in state.groups.values()],
        control=state.control.rows(),  # ControlRecords are frozen
        sessions=state.sessions.to_json(),
        rejections=state.rejections,
        applied_index=state.applied_index,
        telemetry=json.dumps(state.telemetry.to_dict()),
    )


def encode_captured(c: Captured) -> bytes:
    """The captured state as a snapshot's bytes: Arrow tables, records in id order (Arrow's
    sort and take: in C++, the GIL let go; UTF-8's byte order is the code points' order).
    Consumes the capture: each field's list goes once it is an Arrow array."""
    import pyarrow.compute as pc

    u = c.uavs
    uav_ids = pa.array(u.pop("id"), pa.string())
    by_id = pc.sort_indices(uav_ids)
    rows = by_id.to_numpy()  # into the captured columns
    m = c.missions
    mission_ids = pa.array(m.pop("id"), pa.string())
    mission_order = pc.sort_indices(mission_ids)
    routes = list(map(m.pop("route").__getitem__, mission_order.to_pylist()))
    waypoints = np.frombuffer(b"".join(routes), dtype=np.float64)
    groups = sorted(c.groups)  # ids are unique: ordered by id alone
    tables = {
        "stations": pa.table({"name": pa.array(sorted(c.stations), pa.string())}),
        "uavs": pa.table(
            {
                "id": uav_ids.take(by_id),
                "home_station": pa.array(u.pop("home_station"), pa.string()).take(by_id).dictionary_encode(),
                "status": pa.array(list(map(_VALUE, u.pop("status"))), pa.string()).take(by_id).dictionary_encode(),
                "mission": pa.array(u.pop("mission"), pa.string()).take(by_id),
                "version": pa.array(u.pop("version"), pa.int64()).take(by_id),
                **{name: pa.array(column[rows]) for name, column in c.floats.items()},
                "report_time": pa.array(c.report_time[rows]),
                "report_seq": pa.array(c.report_seq[rows]),
            }
        ),
        "missions": pa.table(
            {
                "id": mission_ids.take(mission_order),
                "priority": pa.array(m.pop("priority"), pa.int64()).take(mission_order),
                "min_battery": pa.array(m.pop("min_battery"), pa.float64()).take(mission_order),
                "status": pa.array(list(map(_VALUE, m.pop("status"))), pa.string())
                .take(mission_order)
                .dictionary_encode(),
                "uav": pa.array(m.pop("uav"), pa.string()).take(mission_order),
                "created_index": pa.array(m.pop("created_index"), pa.int64()).take(mission_order),
                "version": pa.array(m.pop("version"), pa.int64()).take(mission_order),
                "waypoints": pa.array([len(r) // WAYPOINT_BYTES for r in routes], pa.int32()),
            }
        ),
        "waypoints": pa.table({"lat": waypoints[0::3], "lon": waypoints[1::3], "alt": waypoints[2::3]}),
        "groups": pa.table(
            {
                "id": pa.array([g[0] for g in groups], pa.string()),
                "version": pa.array([g[1] for g in groups], pa.int64()),
                "members": pa.array([len(g[2]) for g in groups], pa.int32()),
            }
        ),
        "group_members": pa.table({"uav": pa.array([u for g in groups for u in sorted(g[2])], pa.string())}),
        "control": pa.table(
            {
                "key": pa.array([r.key for r in c.control], pa.string()),
                "value": pa.array([r.value for r in c.control], pa.string()),
                "version": pa.array([r.version for r in c.control], pa.int64()),
            }
        ),
        "meta": pa.table(
            {
                # in least-recently-used order: expiry depends on it
                "sessions": pa.array([c.sessions]),
                "rejections": pa.array([c.rejections], pa.int64()),
                "applied_index": pa.array([c.applied_index], pa.int64()),
                "telemetry": pa.array([c.telemetry]),
            }
        ),
    }
    return encode_tables(tables)


def encode_tables(tables: dict[str, pa.Table]) -> bytes:
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
