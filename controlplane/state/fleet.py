"""FleetState: the replicated, deterministic fleet state machine.

Commands (state/commands.py) are JSON objects with a "type" and its fields, checked by
`validate()` before they are proposed; `apply()` checks each again against the state and
either applies it or records a deterministic rejection — never an exception, so every
replica agrees.
After each applied command the scheduler assigns pending missions to idle UAVs by
priority, then battery, then great-circle distance to the first waypoint.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa  # pyarrow.compute is imported where used: ~85 ms of a process's start

from controlplane import bugs, fastjson
from controlplane.raft.messages import Entry
from controlplane.state.columns import KINEMATICS, ROW_FIELDS, UAVColumns
from controlplane.state.commands import COMMANDS as COMMANDS  # re-exported: the commands' names
from controlplane.state.commands import MAX_WAYPOINTS as MAX_WAYPOINTS
from controlplane.state.commands import _session_fields, _validate
from controlplane.state.commands import encode as encode
from controlplane.state.commands import validate as validate
from controlplane.state.control_kv import ControlKV
from controlplane.state.id_rows import IdRows
from controlplane.state.model import (
    FINISHED,
    LEGAL_TRANSITIONS,
    UAV,
    CommandError,
    ConflictError,
    Group,
    Mission,
    MissionStatus,
    NotFoundError,
    UAVStatus,
    Waypoint,
    great_circle_m,
    ident,
    pack_route,
    route_start,
)
from controlplane.state.sessions import SESSION_FIELDS, SESSION_TTL_ENTRIES, Sessions, entry_digest
from controlplane.state.snapshot_codec import capture, decode_state, encode_captured, encode_state
from controlplane.state.telemetry import (
    TelemetryCounts,
    apply_last_writer_wins,
    decode_entry,
    int_values,
    invalid_rows,
    is_telemetry,
    report_time_histogram,
)

CHECKPOINTS_KEPT = 16
# Commands a leader checked before proposing them, kept for its own apply; a leader deposed
# before they commit never applies them itself, so the map is emptied past this many.
CHECKED_KEPT = 4096


class FleetState:
    def __init__(self, *, session_ttl_entries: int = SESSION_TTL_ENTRIES) -> None:
        if session_ttl_entries < 1:
            raise ValueError(f"session_ttl_entries must be positive, got {session_ttl_entries}")
        self.session_ttl_entries = session_ttl_entries
        self.stations: set[str] = set()
        self.uavs: dict[str, UAV] = {}
        self.columns = UAVColumns()
        self.missions: dict[str, Mission] = {}
        self.groups: dict[str, Group] = {}
        self.sessions = Sessions(ttl_entries=session_ttl_entries)
        self.control = ControlKV()
        self.rejections = 0
        self.telemetry = TelemetryCounts()
        self.applied_index = 0
        # Derived state, rebuilt on restore, never in snapshots:
        self._pending: list[tuple[int, int, str]] = []  # sorted (-priority, created_index, id)
        # A scheduling pass leaves no mission an idle UAV could take; the next one can only
        # assign something once a mission turns pending, a UAV idle, or a battery rises.
        self._schedule_due = True
        self._id_rows: IdRows | None = None  # known ids and their rows, while no UAV comes or goes
        self.checkpoints: OrderedDict[int, dict[str, str]] = OrderedDict()  # index -> table digests
        self._checked: dict[bytes, dict[str, Any]] = {}  # command bytes -> parsed and valid
        # id(entry bytes) -> (those bytes, its segments decoded): by identity, as hashing a
        # megabyte entry costs ~0.6 ms; the bytes are held, so no other object has their id.
        self._checked_telemetry: dict[int, tuple[bytes, list[pa.Table]]] = {}
        # The change feed (sync/changefeed.py) switches this on and drains the changes.
        self.track_changes = False
        self._changes: dict[tuple[str, str], None] = {}
        self._telemetry_changes: list[dict[str, Any]] = []

    # --- StateMachine -----------------------------------------------------------------------

    def apply(self, entry: Entry) -> dict[str, Any]:
        """Apply one committed entry. Never raises: a malformed entry, or a bug met while
        applying one, is an answer recorded the same way on every replica."""
        self.applied_index = entry.index
        try:
            if is_telemetry(entry.data):
                return self._apply_telemetry(entry.data, entry.index)
            return self._apply_command(entry)
        except MemoryError:
            raise  # not deterministic: this replica must not go on with a different state
        except Exception as exc:
            if bugs.enabled("telemetry_poison"):
                raise
            self.rejections += 1
            return {
                "ok": False,
                "index": entry.index,
                "internal": True,
                "field": "entry",
                "error": f"applying it failed ({type(exc).__name__}: {exc}); the state may be partly changed",
            }

    def checked(self, data: bytes, command: dict[str, Any]) -> None:
        """`command` is `data` parsed and validated (commands.validate), as a leader does before
        proposing it: its apply here takes it as it is instead of reading and checking the
        bytes again (~8 % of a leader's loop under many writers). The same bytes always parse
        to the same command and validation reads nothing else, so the answer is the one
        every other replica computes from the bytes."""
        if len(self._checked) >= CHECKED_KEPT:
            self._checked.clear()
        self._checked[data] = command

    @contextmanager
    def telemetry_checked(self, data: bytes, segments: list[pa.Table]) -> Iterator[None]:
        """While proposing the telemetry entry `data`: its segments as decode_entry gives them
        (the leader decoded each to check it before joining them). Its apply here, if it comes
        meanwhile, takes them instead of decoding the entry again (~45 us per 1,000 reports of
        the leader's CPU). Decoding reads nothing but the bytes, so the answer is every other
        replica's. Found by identity (the log hands the apply the very bytes proposed; other
        bytes are decoded). Kept no longer than the proposal waits: megabytes per entry."""
        self._checked_telemetry[id(data)] = (data, segments)
        try:
            yield
        finally:
            self._checked_telemetry.pop(id(data), None)

    def _apply_command(self, entry: Entry) -> dict[str, Any]:
        cmd: Any = self._checked.pop(entry.data, None)
        valid = cmd is not None
        if not valid:
            try:
                cmd = fastjson.loads(entry.data)
            except ValueError:
                return self._reject(entry.index, CommandError("command", "not valid JSON"))
        self.sessions.expire(entry.index)
        if isinstance(cmd, dict) and cmd.get("type") == "open_session" and not set(cmd) & set(SESSION_FIELDS):
            return {"ok": True, "index": entry.index, "session": self.sessions.open(entry.index)}
        if not isinstance(cmd, dict) or "client" not in cmd:
            return self._execute(cmd, entry.index, valid)
        try:
            client, seq, ack = _session_fields(cmd)
        except CommandError as exc:
            return self._reject(entry.index, exc)
        digest = entry_digest(entry.data)
        seen = self.sessions.check(client, seq, ack, digest, entry.index)
        if seen.kind == "duplicate":
            assert seen.answer is not None
            self.sessions.touch(client, entry.index)
            return seen.answer
        if seen.kind == "expired":
            return {"ok": False, "index": entry.index, "expired": True, "field": "seq", "error": seen.reason}
        if seen.kind in ("reused", "older"):
            return self._reject(entry.index, CommandError("seq", seen.reason), reused=seen.kind == "reused")
        answer = self._execute(cmd, entry.index, valid)
        self.sessions.record(client, seq, digest, answer, entry.index)
        return answer

    def _execute(self, cmd: Any, index: int, valid: bool = False) -> dict[str, Any]:
        try:
            answer = {"ok": True, "index": index, **self._apply(cmd if valid else _validate(cmd), index)}
        except CommandError as exc:
            return self._reject(index, exc)
        self._schedule()
        return answer

    def _reject(self, index: int, exc: CommandError, *, reused: bool = False) -> dict[str, Any]:
        """A definite refusal: nothing of the command was applied."""
        self.rejections += 1
        answer = {
            "ok": False,
            "index": index,
            "field": exc.field,
            "error": exc.reason,
            "conflict": isinstance(exc, ConflictError),
            "not_found": isinstance(exc, NotFoundError),
        }
        if reused:
            answer["reused"] = True
        return answer

    def _touch(self, kind: str, record_id: str) -> None:
        if self.track_changes:
            self._changes[(kind, record_id)] = None

    def drain_changes(self) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
        """Records changed since the last drain (kind, id), and telemetry batch counts."""
        changed, telemetry = list(self._changes), self._telemetry_changes
        self._changes, self._telemetry_changes = {}, []
        return changed, telemetry

    # --- telemetry --------------------------------------------------------------------------

    def _apply_telemetry(self, data: bytes, index: int) -> dict[str, Any]:
        try:
            checked = self._checked_telemetry.pop(id(data), None)
            segments, auto_register = decode_entry(data, None if checked is None else checked[1])
        except (ValueError, pa.ArrowException) as exc:
            return self._reject(index, CommandError("telemetry", f"unreadable batch: {exc}"))
        counts = TelemetryCounts()
        report_times: list[list[float]] = []
        for table in segments:
            if not table.num_rows:
                continue
            rows = self._report_rows(table, auto_register, counts)
            bad, _ = invalid_rows(table, check_ids=False)
            rows[bad] = -1
            counts.rejected += int(np.count_nonzero(rows < 0))
            applied, accepted = apply_last_writer_wins(self.columns, rows, table)
            counts.add(applied)
            if self.track_changes:
                report_times += report_time_histogram(table, accepted)
        self.telemetry.add(counts)
        if counts.written:
            self._schedule_due = True  # batteries may have risen
            self._schedule()
        if self.track_changes:
            self._telemetry_changes.append({"index": index, **counts.to_dict(), "report_times": report_times})
        return {"ok": True, "index": index, **counts.to_dict()}

    def _report_rows(self, table: pa.Table, auto_register: bool, counts: TelemetryCounts) -> np.ndarray:
        """Each report's UAV row (-1: unknown UAV), registering unknown UAVs if asked to.
        Ids are looked up once per distinct UAV (the column is dictionary-encoded), in one
        vectorized hash lookup between the segment's ids and the known ones (IdRows)."""
        column = table.column("uav").chunk(0)
        codes = int_values(column.indices, -1)
        if self._id_rows is None:
            self._id_rows = IdRows(self.uavs.values())
        code_rows = self._id_rows.of(column.dictionary)
        unknown = np.nonzero(code_rows < 0)[0].tolist()
        if unknown and auto_register:
            names = column.dictionary
            present, first = np.unique(codes, return_index=True)
            first_at = dict(zip(present.tolist(), first.tolist(), strict=True))
            stations = table.column("station")
            for code in unknown:
                name, station = names[code].as_py(), stations[first_at[code]].as_py() if code in first_at else None
                if station in self.stations and _is_ident(name):
                    code_rows[code] = self._register(name, station, {}).row
                    counts.registered += 1
        rows: np.ndarray = np.append(code_rows, -1)[codes]  # code -1 (a null id) takes the last slot
        return rows

    # --- commands ---------------------------------------------------------------------------

    def _apply(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        handler: Callable[[dict[str, Any], int], dict[str, Any]] = getattr(self, f"_cmd_{cmd['type']}")
        return handler(cmd, index)

    @staticmethod
    def _check_version(cmd: dict[str, Any], version: int) -> None:
        expected = cmd.get("expected_version")
        if expected is not None and expected != version:
            raise ConflictError("expected_version", f"is {expected}, but the record is at version {version}")

    def _uav(self, uav_id: str) -> UAV:
        uav = self.uavs.get(uav_id)
        if uav is None:
            raise NotFoundError("uav", f"no UAV {uav_id!r}")
        return uav

    def _mission(self, mission_id: str) -> Mission:
        mission = self.missions.get(mission_id)
        if mission is None:
            raise NotFoundError("mission", f"no mission {mission_id!r}")
        return mission

    def _group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            raise NotFoundError("group", f"no group {group_id!r}")
        return group

    def _set_uav(self, uav: UAV, status: UAVStatus, mission: str | None) -> None:
        uav.status, uav.mission = status, mission
        idle = status is UAVStatus.IDLE and mission is None
        self.columns.set_idle(uav.row, idle)
        if idle:
            self._schedule_due = True
        self._touch("uav", uav.id)

    def _set_mission(self, mission: Mission, status: MissionStatus, uav: str | None) -> None:
        key = (-mission.priority, mission.created_index, mission.id)
        if mission.status is MissionStatus.PENDING and status is not MissionStatus.PENDING:
            del self._pending[bisect.bisect_left(self._pending, key)]
        elif status is MissionStatus.PENDING and mission.status is not MissionStatus.PENDING:
            bisect.insort(self._pending, key)
            self._schedule_due = True
        mission.status, mission.uav = status, uav
        self._touch("mission", mission.id)

    def _register(self, uav_id: str, station: str, values: dict[str, Any]) -> UAV:
        uav = UAV(uav_id, sys.intern(station), self.columns.allocate(uav_id, values))  # one str per station
        self.uavs[uav_id] = uav
        self._id_rows = None
        self._set_uav(uav, UAVStatus.IDLE, None)
        return uav

    def _cmd_checkpoint(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        digests = self.digests()
        self.checkpoints[index] = digests
        while len(self.checkpoints) > CHECKPOINTS_KEPT:
            self.checkpoints.popitem(last=False)
        return {"digests": digests}

    def _cmd_control_cas(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        record = self.control.cas(cmd["key"], cmd.get("value"), cmd["if_version"], index)
        return {"version": 0 if record is None else record.version}

    def _cmd_register_station(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        self.stations.add(cmd["station"])
        self._touch("station", cmd["station"])
        return {}

    def _cmd_register_uav(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        if cmd["uav"] in self.uavs:
            raise ConflictError("uav", f"UAV {cmd['uav']!r} is already registered")
        if cmd["home_station"] not in self.stations:
            raise NotFoundError("home_station", f"no station {cmd['home_station']!r}")
        self._register(cmd["uav"], cmd["home_station"], {k: cmd[k] for k in KINEMATICS if k in cmd})
        return {"version": 1}

    def _cmd_update_uav(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        uav = self._uav(cmd["uav"])
        self._check_version(cmd, uav.version)
        if "status" in cmd:
            new = UAVStatus(cmd["status"])
            if new is UAVStatus.IN_MISSION and uav.mission is None:
                raise CommandError("status", "only the scheduler puts a UAV in a mission")
            if new is not UAVStatus.IN_MISSION and uav.mission is not None:
                self._release_mission(uav)
            self._set_uav(uav, new, uav.mission)
        columns = self.columns
        if (
            "battery" in cmd
            and self._pending
            and columns.idle[uav.row]
            and cmd["battery"] > columns.floats["battery"][uav.row]
        ):
            # An idle UAV's battery rises (one turning idle set it already; with nothing
            # pending, the next mission to turn pending sets it).
            self._schedule_due = True
        columns.set(uav.row, cmd)
        uav.version += 1
        self._touch("uav", uav.id)
        return {"version": uav.version}

    def _cmd_delete_uav(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        uav = self._uav(cmd["uav"])
        self._check_version(cmd, uav.version)
        if uav.mission is not None:
            raise ConflictError("uav", f"UAV {uav.id!r} is on mission {uav.mission!r}")
        del self.uavs[uav.id]
        self._id_rows = None
        self.columns.release(uav.row)
        self._touch("uav", uav.id)
        for group in self.groups.values():
            if uav.id in group.members:
                group.members.discard(uav.id)
                group.version += 1
                self._touch("group", group.id)
        return {}

    def _cmd_create_mission(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        if cmd["mission"] in self.missions:
            raise ConflictError("mission", f"mission {cmd['mission']!r} already exists")
        route = pack_route(Waypoint.parse(w, f"waypoints[{i}]") for i, w in enumerate(cmd["waypoints"]))
        mission = Mission(
            cmd["mission"], route, int(cmd.get("priority", 0)), float(cmd.get("min_battery", 0.0)),
            created_index=index,
        )  # fmt: skip
        self.missions[mission.id] = mission
        bisect.insort(self._pending, (-mission.priority, mission.created_index, mission.id))
        self._schedule_due = True
        self._touch("mission", mission.id)
        return {"version": 1}

    def _cmd_set_mission_status(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        mission = self._mission(cmd["mission"])
        self._check_version(cmd, mission.version)
        new = MissionStatus(cmd["status"])
        if new not in LEGAL_TRANSITIONS[mission.status]:
            raise ConflictError("status", f"a {mission.status.value} mission cannot become {new.value}")
        if new is MissionStatus.ASSIGNED:
            raise CommandError("status", "missions are assigned by the scheduler")
        uav = self.uavs.get(mission.uav) if mission.uav else None
        keep_uav = mission.uav if new is not MissionStatus.PENDING else None
        self._set_mission(mission, new, keep_uav)
        if uav is not None and (new in FINISHED or new is MissionStatus.PENDING):
            self._set_uav(uav, UAVStatus.IDLE, None)
            uav.version += 1
        mission.version += 1
        return {"version": mission.version}

    def _cmd_delete_mission(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        mission = self._mission(cmd["mission"])
        self._check_version(cmd, mission.version)
        if mission.status not in FINISHED and mission.status is not MissionStatus.PENDING:
            raise ConflictError("mission", f"a {mission.status.value} mission cannot be deleted; abort it first")
        self._set_mission(mission, MissionStatus.ABORTED, mission.uav)  # leaves the pending queue
        del self.missions[mission.id]
        return {}

    def _cmd_create_group(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        if cmd["group"] in self.groups:
            raise ConflictError("group", f"group {cmd['group']!r} already exists")
        self.groups[cmd["group"]] = Group(cmd["group"])
        self._touch("group", cmd["group"])
        return {"version": 1}

    def _cmd_add_member(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        group = self._group(cmd["group"])
        self._check_version(cmd, group.version)
        self._uav(cmd["uav"])
        group.members.add(cmd["uav"])
        group.version += 1
        self._touch("group", group.id)
        return {"version": group.version}

    def _cmd_remove_member(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        group = self._group(cmd["group"])
        self._check_version(cmd, group.version)
        if cmd["uav"] not in group.members:
            raise ConflictError("uav", f"{cmd['uav']!r} is not in group {group.id!r}")
        group.members.discard(cmd["uav"])
        group.version += 1
        self._touch("group", group.id)
        return {"version": group.version}

    def _cmd_dissolve_group(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        group = self._group(cmd["group"])
        self._check_version(cmd, group.version)
        del self.groups[group.id]
        self._touch("group", group.id)
        return {}

    # --- scheduler --------------------------------------------------------------------------

    def _release_mission(self, uav: UAV) -> None:
        mission = self.missions.get(uav.mission or "")
        if mission is not None:
            if mission.status is MissionStatus.ASSIGNED:
                self._set_mission(mission, MissionStatus.PENDING, None)
            elif mission.status is MissionStatus.ACTIVE:
                self._set_mission(mission, MissionStatus.FAILED, mission.uav)
            mission.version += 1
        self._set_uav(uav, uav.status, None)

    def _schedule(self) -> None:
        """Pending missions, highest priority first (then oldest), each to the idle UAV with
        enough battery that is nearest its first waypoint (then fullest battery, then id).
        Costs nothing while no mission is pending or no UAV is idle (the idle rows are
        counted); one idle UAV is matched alone; otherwise one pass over the UAV columns finds
        the idle rows, then vectorized passes over those rows alone per pending mission that
        some idle UAV has the battery for. Skipped while nothing it depends on changed since
        the last pass (see _schedule_due): a fleet with missions no idle UAV can take paid
        ~0.45 ms for every command at 100k UAVs, whatever the command."""
        if not self._pending or not self._schedule_due:
            return
        self._schedule_due = False
        columns = self.columns
        if columns.idle_count <= 1:
            if columns.idle_count:
                self._schedule_the_one_idle_row(int(columns.idle.argmax()))  # stops at it
            return
        idle_rows = np.flatnonzero(columns.idle)  # ascending, as the rows of the whole columns
        battery = columns.floats["battery"][idle_rows]
        lat, lon = columns.floats["lat"][idle_rows], columns.floats["lon"][idle_rows]
        available = np.ones(len(idle_rows), dtype=bool)  # over idle_rows
        best_battery = float(battery.max())
        position = 0  # in _pending, which loses each mission assigned here (never gains one)
        while position < len(self._pending):
            mission = self.missions[self._pending[position][2]]
            if mission.min_battery > best_battery:
                position += 1
                continue
            able = np.nonzero(available & (battery >= mission.min_battery))[0]
            distance = great_circle_m(lat[able], lon[able], *route_start(mission.route))
            rows = idle_rows[able]
            chosen = _nearest(rows, distance, battery[able], columns.ids)
            available[able[np.searchsorted(rows, chosen)]] = False
            self._assign(mission, self.uavs[columns.ids[chosen]])
            if not available.any():
                return
            best_battery = float(battery[available].max())

    def _assign(self, mission: Mission, uav: UAV) -> None:
        self._set_mission(mission, MissionStatus.ASSIGNED, uav.id)
        mission.version += 1
        self._set_uav(uav, UAVStatus.IN_MISSION, mission.id)
        uav.version += 1

    def _schedule_the_one_idle_row(self, row: int) -> None:
        """The rule when one UAV is idle (a UAV registering while missions wait, thousands of
        times in a fleet's start or a restart's replay): the first pending mission it has the
        battery for is nearest to it, there being no other; without the vectorized passes,
        whose per-call costs were most of a registration's."""
        battery = float(self.columns.floats["battery"][row])
        for _, _, mission_id in self._pending:
            mission = self.missions[mission_id]
            if mission.min_battery <= battery:
                self._assign(mission, self.uavs[self.columns.ids[row]])
                return

    # --- queries (read the local state; callers choose linearizable or stale) -------------

    def uav(self, uav_id: str) -> dict[str, Any]:
        return dict(zip(UAV_FIELDS, self._uav_values(self._uav(uav_id))))  # noqa: B905 (same length by construction)

    def _uav_values(self, u: UAV) -> tuple[Any, ...]:
        return (u.id, u.home_station, u.status.value, u.mission, u.version, *self.columns.values(u.row))

    def mission(self, mission_id: str) -> dict[str, Any]:
        return self._mission(mission_id).to_dict()

    def group(self, group_id: str) -> dict[str, Any]:
        g = self._group(group_id)
        return {"id": g.id, "members": sorted(g.members), "version": g.version}

    def record_values(self, kind: str, record_id: str) -> tuple[tuple[str, ...], tuple[Any, ...]] | None:
        """record() as its field names and values (the change feed keeps them so): a UAV's
        straight from its columns, without a dict between (every replica does this for every
        changed UAV)."""
        if kind == "uav":
            u = self.uavs.get(record_id)
            return None if u is None else (UAV_FIELDS, self._uav_values(u))
        record = self.record(kind, record_id)
        return None if record is None else (tuple(record), tuple(record.values()))

    def record(self, kind: str, record_id: str) -> dict[str, Any] | None:
        """The current record of a kind ("uav", "mission", "group", "station"); None if gone."""
        if kind == "station":
            return {"id": record_id} if record_id in self.stations else None
        try:
            return _RECORD_OF[kind](self, record_id)
        except CommandError:
            return None

    def missions_by_status(self, status: str | None = None) -> list[dict[str, Any]]:
        wanted = MissionStatus(status) if status is not None else None
        return [m.to_dict() for _, m in sorted(self.missions.items()) if wanted is None or m.status is wanted]

    def uavs_where(
        self,
        *,
        station: str | None = None,
        status: str | None = None,
        bbox: tuple[float, float, float, float] | None = None,
    ) -> list[dict[str, Any]]:
        """UAVs filtered by home station, status and/or a (min_lat, min_lon, max_lat, max_lon) box.
        A box whose min_lon is east of its max_lon crosses the antimeridian; one whose min_lat
        is north of its max_lat holds nothing."""
        wanted = UAVStatus(status) if status is not None else None
        lat, lon = self.columns.floats["lat"], self.columns.floats["lon"]
        out = []
        for uav_id, u in sorted(self.uavs.items()):
            if station is not None and u.home_station != station:
                continue
            if wanted is not None and u.status is not wanted:
                continue
            if bbox is not None and not _in_box(bbox, lat[u.row], lon[u.row]):
                continue
            out.append(self.uav(uav_id))
        return out

    def group_members(self, group: str) -> list[str]:
        return sorted(self._group(group).members)

    def groups_list(self) -> list[dict[str, Any]]:
        return [self.group(g) for g in sorted(self.groups)]

    # --- snapshots and digests --------------------------------------------------------------

    def snapshot(self) -> bytes:
        """Arrow IPC tables (see snapshot_codec)."""
        return encode_state(self)

    def prepare_snapshot(self) -> Callable[[], bytes]:
        """The state captured now (nothing may be applied meanwhile); the returned call
        encodes the capture and may run while entries are applied to this state."""
        if bugs.enabled("snapshot_encoded_live"):
            return lambda: encode_state(self)
        captured = capture(self)
        return lambda: encode_captured(captured)

    def restore(self, data: bytes) -> None:
        self.prepare_restore(data)()

    def prepare_restore(self, data: bytes) -> Callable[[], None]:
        """Decode a snapshot into a new state without touching this one (a worker thread may
        do it while queries read this state); the returned call swaps it in."""
        fresh = FleetState(session_ttl_entries=self.session_ttl_entries)
        if data:
            decode_state(data, fresh)
        fresh.columns.mark_idle(
            [u.row for u in fresh.uavs.values() if u.status is UAVStatus.IDLE and u.mission is None]
        )
        fresh._pending = sorted(
            (-m.priority, m.created_index, m.id) for m in fresh.missions.values() if m.status is MissionStatus.PENDING
        )

        def install() -> None:
            fresh.track_changes = self.track_changes
            self.__dict__.update(fresh.__dict__)

        return install

    def digests(self) -> dict[str, str]:
        """One hash per table (not of sessions or counters): equal on every replica at the
        same log index. The UAV hash covers the kinematic columns byte for byte."""
        uav_ids = sorted(self.uavs)
        records = [self.uavs[u] for u in uav_ids]
        uavs = hashlib.sha256(
            json.dumps([[u.id, u.home_station, u.status.value, u.mission, u.version] for u in records]).encode()
        )
        rows = np.fromiter((u.row for u in records), dtype=np.int64, count=len(records))
        for column in (*self.columns.floats.values(), self.columns.report_time, self.columns.report_seq):
            uavs.update(np.ascontiguousarray(column[rows]).tobytes())
        return {
            "stations": _sha(sorted(self.stations)),
            "uavs": uavs.hexdigest(),
            "missions": _sha([m.to_dict() for _, m in sorted(self.missions.items())]),
            "groups": _sha([[g.id, sorted(g.members), g.version] for _, g in sorted(self.groups.items())]),
            "control": _sha([r.to_dict() for r in self.control.rows()]),
        }

    def digest(self) -> str:
        return _sha(self.digests())


# A UAV's record, in the order uav() and record_values() give it.
UAV_FIELDS = ("id", "home_station", "status", "mission", "version", *ROW_FIELDS)
# record(kind, id)'s readers, found once (the change feed asks for every changed record).
_RECORD_OF: dict[str, Callable[[FleetState, str], dict[str, Any]]] = {
    "uav": FleetState.uav,
    "mission": FleetState.mission,
    "group": FleetState.group,
}


def _nearest(rows: np.ndarray, distance: np.ndarray, battery: np.ndarray, ids: np.ndarray) -> int:
    """The row of the nearest UAV, then the fullest battery, then the lowest id (rows are in
    allocation order, not id order: ids break the last tie)."""
    nearest = distance.min()
    if np.isnan(nearest):  # validated positions never make NaN; were there any, they come last
        distance = np.nan_to_num(distance, nan=np.inf)
        nearest = distance.min()
    tied = np.nonzero(distance == nearest)[0]
    if len(tied) > 1:
        tied = tied[battery[tied] == battery[tied].max()]
    return int(min(rows[tied].tolist(), key=lambda row: ids[row]))


def _in_box(box: tuple[float, float, float, float], lat: float, lon: float) -> bool:
    min_lat, min_lon, max_lat, max_lon = box
    if not min_lat <= lat <= max_lat:
        return False
    if min_lon <= max_lon:
        return min_lon <= lon <= max_lon
    return lon >= min_lon or lon <= max_lon  # across the antimeridian


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _is_ident(value: str) -> bool:
    try:
        ident(value, "uav")
    except CommandError:
        return False
    return True
