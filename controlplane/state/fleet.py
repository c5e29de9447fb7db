"""FleetState: the replicated, deterministic fleet state machine.

Commands are JSON objects with a "type" and its fields (see COMMANDS), optionally
"expected_version" (optimistic concurrency: a mismatch is a conflict) and "client"/"seq"
(exactly-once: a retried command gets the first answer). `validate()` checks a command
before it is proposed; `apply()` checks it again against the state and either applies it
or records a deterministic rejection — never an exception, so every replica agrees.
After each applied command the scheduler assigns pending missions to idle UAVs by
priority, then battery, then great-circle distance to the first waypoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from controlplane.raft.messages import Entry
from controlplane.state.model import (
    FINISHED,
    LEGAL_TRANSITIONS,
    UAV,
    CommandError,
    ConflictError,
    Group,
    Mission,
    MissionStatus,
    UAVStatus,
    Waypoint,
    _number,
    great_circle_m,
    ident,
)
from controlplane.state.snapshot_codec import decode_state, encode_state

MAX_WAYPOINTS = 500


def _optional_number(cmd: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    return None if key not in cmd else _number(cmd[key], key, lo, hi)


def _validate(cmd: Any) -> dict[str, Any]:
    if not isinstance(cmd, dict):
        raise CommandError("command", f"must be a JSON object, got {type(cmd).__name__}")
    kind = cmd.get("type")
    if kind not in COMMANDS:
        raise CommandError("type", f"must be one of {sorted(COMMANDS)}, got {kind!r}")
    if "expected_version" in cmd and (
        isinstance(cmd["expected_version"], bool)
        or not isinstance(cmd["expected_version"], int)
        or cmd["expected_version"] < 1
    ):
        raise CommandError("expected_version", "must be a positive integer")
    for key in REQUIRED[kind]:
        if key not in cmd:
            raise CommandError(key, "is required")
    for key in ("uav", "mission", "group", "station", "home_station"):
        if key in cmd:
            ident(cmd[key], key)
    for key, (lo, hi) in {
        "battery": (0, 100),
        "lat": (-90, 90),
        "lon": (-180, 180),
        "alt": (-500, 10_000),
        "min_battery": (0, 100),
    }.items():
        _optional_number(cmd, key, lo, hi)
    if "status" in cmd:
        allowed = UAVStatus if kind == "update_uav" else MissionStatus
        if cmd["status"] not in {s.value for s in allowed}:
            raise CommandError("status", f"must be one of {sorted(s.value for s in allowed)}, got {cmd['status']!r}")
    if kind == "create_mission":
        wps = cmd["waypoints"]
        if not isinstance(wps, list) or not 1 <= len(wps) <= MAX_WAYPOINTS:
            raise CommandError("waypoints", f"must be a list of 1 to {MAX_WAYPOINTS} waypoints")
        for i, w in enumerate(wps):
            Waypoint.parse(w, f"waypoints[{i}]")
        if "priority" in cmd and (isinstance(cmd["priority"], bool) or not isinstance(cmd["priority"], int)):
            raise CommandError("priority", "must be an integer")
    return cmd


REQUIRED: dict[str, tuple[str, ...]] = {
    "register_station": ("station",),
    "register_uav": ("uav", "home_station"),
    "update_uav": ("uav",),
    "delete_uav": ("uav",),
    "create_mission": ("mission", "waypoints"),
    "set_mission_status": ("mission", "status"),
    "delete_mission": ("mission",),
    "create_group": ("group",),
    "add_member": ("group", "uav"),
    "remove_member": ("group", "uav"),
    "dissolve_group": ("group",),
}
COMMANDS = frozenset(REQUIRED)


def validate(command: dict[str, Any]) -> dict[str, Any]:
    """Check a command before proposing it; raises CommandError naming the field."""
    return _validate(command)


def encode(command: dict[str, Any]) -> bytes:
    return json.dumps(validate(command), sort_keys=True, separators=(",", ":")).encode()


class FleetState:
    def __init__(self) -> None:
        self.stations: set[str] = set()
        self.uavs: dict[str, UAV] = {}
        self.missions: dict[str, Mission] = {}
        self.groups: dict[str, Group] = {}
        self.sessions: dict[str, tuple[int, dict[str, Any]]] = {}
        self.rejections = 0
        self.applied_index = 0

    # --- StateMachine -----------------------------------------------------------------------

    def apply(self, entry: Entry) -> dict[str, Any]:
        self.applied_index = entry.index
        try:
            cmd = json.loads(entry.data)
        except ValueError:
            return self._reject(entry.index, CommandError("command", "not valid JSON"))
        client = cmd.get("client") if isinstance(cmd, dict) else None
        seq = cmd.get("seq") if isinstance(cmd, dict) else None
        if client is not None:
            if not isinstance(client, str) or isinstance(seq, bool) or not isinstance(seq, int) or seq < 1:
                return self._reject(entry.index, CommandError("seq", "client needs a positive integer seq"))
            last = self.sessions.get(client)
            if last is not None and seq <= last[0]:
                if seq == last[0]:
                    return last[1]
                return self._reject(entry.index, CommandError("seq", f"{seq} is older than {last[0]}"))
        try:
            answer = {"ok": True, "index": entry.index, **self._apply(_validate(cmd), entry.index)}
        except CommandError as exc:
            answer = self._reject(entry.index, exc)
        else:
            self._schedule()
        if client is not None and isinstance(seq, int):
            self.sessions[client] = (seq, answer)
        return answer

    def _reject(self, index: int, exc: CommandError) -> dict[str, Any]:
        self.rejections += 1
        return {
            "ok": False,
            "index": index,
            "field": exc.field,
            "error": exc.reason,
            "conflict": isinstance(exc, ConflictError),
        }

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
            raise CommandError("uav", f"no UAV {uav_id!r}")
        return uav

    def _mission(self, mission_id: str) -> Mission:
        mission = self.missions.get(mission_id)
        if mission is None:
            raise CommandError("mission", f"no mission {mission_id!r}")
        return mission

    def _group(self, group_id: str) -> Group:
        group = self.groups.get(group_id)
        if group is None:
            raise CommandError("group", f"no group {group_id!r}")
        return group

    def _cmd_register_station(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        self.stations.add(cmd["station"])
        return {}

    def _cmd_register_uav(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        if cmd["uav"] in self.uavs:
            raise CommandError("uav", f"UAV {cmd['uav']!r} is already registered")
        if cmd["home_station"] not in self.stations:
            raise CommandError("home_station", f"no station {cmd['home_station']!r}")
        self.uavs[cmd["uav"]] = UAV(
            cmd["uav"],
            cmd["home_station"],
            battery=float(cmd.get("battery", 100.0)),
            lat=float(cmd.get("lat", 0.0)),
            lon=float(cmd.get("lon", 0.0)),
            alt=float(cmd.get("alt", 0.0)),
        )
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
            uav.status = new
        for key in ("battery", "lat", "lon", "alt"):
            if key in cmd:
                setattr(uav, key, float(cmd[key]))
        uav.version += 1
        return {"version": uav.version}

    def _cmd_delete_uav(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        uav = self._uav(cmd["uav"])
        self._check_version(cmd, uav.version)
        if uav.mission is not None:
            raise CommandError("uav", f"UAV {uav.id!r} is on mission {uav.mission!r}")
        del self.uavs[uav.id]
        for group in self.groups.values():
            if uav.id in group.members:
                group.members.discard(uav.id)
                group.version += 1
        return {}

    def _cmd_create_mission(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        if cmd["mission"] in self.missions:
            raise CommandError("mission", f"mission {cmd['mission']!r} already exists")
        waypoints = [Waypoint.parse(w, f"waypoints[{i}]") for i, w in enumerate(cmd["waypoints"])]
        self.missions[cmd["mission"]] = Mission(
            cmd["mission"],
            waypoints,
            int(cmd.get("priority", 0)),
            float(cmd.get("min_battery", 0.0)),
            created_index=index,
        )
        return {"version": 1}

    def _cmd_set_mission_status(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        mission = self._mission(cmd["mission"])
        self._check_version(cmd, mission.version)
        new = MissionStatus(cmd["status"])
        if new not in LEGAL_TRANSITIONS[mission.status]:
            raise CommandError("status", f"a {mission.status.value} mission cannot become {new.value}")
        if new is MissionStatus.ASSIGNED:
            raise CommandError("status", "missions are assigned by the scheduler")
        uav = self.uavs.get(mission.uav) if mission.uav else None
        mission.status = new
        if uav is not None and (new in FINISHED or new is MissionStatus.PENDING):
            uav.status, uav.mission = UAVStatus.IDLE, None
            uav.version += 1
            mission.uav = None if new is MissionStatus.PENDING else mission.uav
        mission.version += 1
        return {"version": mission.version}

    def _cmd_delete_mission(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        mission = self._mission(cmd["mission"])
        self._check_version(cmd, mission.version)
        if mission.status not in FINISHED and mission.status is not MissionStatus.PENDING:
            raise CommandError("mission", f"a {mission.status.value} mission cannot be deleted; abort it first")
        del self.missions[mission.id]
        return {}

    def _cmd_create_group(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        if cmd["group"] in self.groups:
            raise CommandError("group", f"group {cmd['group']!r} already exists")
        self.groups[cmd["group"]] = Group(cmd["group"])
        return {"version": 1}

    def _cmd_add_member(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        group = self._group(cmd["group"])
        self._check_version(cmd, group.version)
        self._uav(cmd["uav"])
        group.members.add(cmd["uav"])
        group.version += 1
        return {"version": group.version}

    def _cmd_remove_member(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        group = self._group(cmd["group"])
        self._check_version(cmd, group.version)
        if cmd["uav"] not in group.members:
            raise CommandError("uav", f"{cmd['uav']!r} is not in group {group.id!r}")
        group.members.discard(cmd["uav"])
        group.version += 1
        return {"version": group.version}

    def _cmd_dissolve_group(self, cmd: dict[str, Any], index: int) -> dict[str, Any]:
        group = self._group(cmd["group"])
        self._check_version(cmd, group.version)
        del self.groups[group.id]
        return {}

    # --- scheduler --------------------------------------------------------------------------

    def _release_mission(self, uav: UAV) -> None:
        mission = self.missions.get(uav.mission or "")
        if mission is not None:
            if mission.status is MissionStatus.ASSIGNED:
                mission.status, mission.uav = MissionStatus.PENDING, None
            elif mission.status is MissionStatus.ACTIVE:
                mission.status = MissionStatus.FAILED
            mission.version += 1
        uav.mission = None

    def _schedule(self) -> None:
        pending = sorted(
            (m for m in self.missions.values() if m.status is MissionStatus.PENDING),
            key=lambda m: (-m.priority, m.created_index, m.id),
        )
        idle = [u for u in self.uavs.values() if u.status is UAVStatus.IDLE and u.mission is None]
        for mission in pending:
            first = mission.waypoints[0]
            able = [u for u in idle if u.battery >= mission.min_battery]
            if not able:
                continue
            best = min(able, key=lambda u: (great_circle_m(u.lat, u.lon, first.lat, first.lon), -u.battery, u.id))
            idle.remove(best)
            mission.status, mission.uav = MissionStatus.ASSIGNED, best.id
            mission.version += 1
            best.status, best.mission = UAVStatus.IN_MISSION, mission.id
            best.version += 1

    # --- queries (read the local state; callers choose linearizable or stale) -------------

    def missions_by_status(self, status: str) -> list[dict[str, Any]]:
        wanted = MissionStatus(status)
        return [m.to_dict() for _, m in sorted(self.missions.items()) if m.status is wanted]

    def uavs_where(
        self,
        *,
        station: str | None = None,
        status: str | None = None,
        bbox: tuple[float, float, float, float] | None = None,
    ) -> list[dict[str, Any]]:
        """UAVs filtered by home station, status and/or a (min_lat, min_lon, max_lat, max_lon) box."""
        wanted = UAVStatus(status) if status is not None else None
        if bbox is not None:
            min_lat, min_lon, max_lat, max_lon = bbox
            if min_lat > max_lat or min_lon > max_lon:
                raise CommandError("bbox", "must be (min_lat, min_lon, max_lat, max_lon) with min <= max")
        out = []
        for _, u in sorted(self.uavs.items()):
            if station is not None and u.home_station != station:
                continue
            if wanted is not None and u.status is not wanted:
                continue
            if bbox is not None and not (bbox[0] <= u.lat <= bbox[2] and bbox[1] <= u.lon <= bbox[3]):
                continue
            out.append(u.to_dict())
        return out

    def group_members(self, group: str) -> list[str]:
        return sorted(self._group(group).members)

    # --- snapshots and digests --------------------------------------------------------------

    def _tables(self) -> dict[str, Any]:
        return {
            "stations": sorted(self.stations),
            "uavs": [u.to_dict() for _, u in sorted(self.uavs.items())],
            "missions": [m.to_dict() for _, m in sorted(self.missions.items())],
            "groups": [[g.id, sorted(g.members), g.version] for _, g in sorted(self.groups.items())],
        }

    def snapshot(self) -> bytes:
        """Arrow IPC tables (see snapshot_codec)."""
        return encode_state(self)

    def restore(self, data: bytes) -> None:
        fresh = FleetState()
        if data:
            decode_state(data, fresh)
        self.__dict__.update(fresh.__dict__)

    def digest(self) -> str:
        """A hash of the fleet tables (not of sessions or counters): equal on every replica."""
        return hashlib.sha256(json.dumps(self._tables(), sort_keys=True).encode()).hexdigest()
