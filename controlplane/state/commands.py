"""Fleet commands as clients send them: JSON objects with a "type" and its fields (see
COMMANDS), optionally "expected_version" (optimistic concurrency: a mismatch is a conflict)
and "client"/"seq"/"ack" (exactly-once: a retried command gets the first answer).
`validate()` checks one before it is proposed, types included; `encode()` is its log bytes.
Clients use this without the state machine (state/fleet.py), which checks again on apply.
"""

from __future__ import annotations

from typing import Any

from controlplane import fastjson
from controlplane.state.columns import KINEMATICS
from controlplane.state.control_kv import check_cas
from controlplane.state.model import CommandError, MissionStatus, UAVStatus, Waypoint, _number, ident
from controlplane.state.sessions import SESSION_FIELDS

MAX_WAYPOINTS = 500


NUMBER_RANGES: dict[str, tuple[float, float]] = {**KINEMATICS, "min_battery": (0, 100)}


def _validate(cmd: Any) -> dict[str, Any]:
    if not isinstance(cmd, dict):
        raise CommandError("command", f"must be a JSON object, got {type(cmd).__name__}")
    kind = cmd.get("type")
    if not isinstance(kind, str) or kind not in COMMANDS:
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
    for key, (lo, hi) in NUMBER_RANGES.items():
        if key in cmd:
            value = cmd[key]
            # _number's own first test, here: seven calls saved on a position report (every replica).
            if not ((type(value) is float or type(value) is int) and lo <= value <= hi and value - value == 0):
                _number(value, key, lo, hi)  # names what is wrong
    if "status" in cmd:
        allowed = UAVStatus if kind == "update_uav" else MissionStatus
        if not isinstance(cmd["status"], str) or cmd["status"] not in {s.value for s in allowed}:
            raise CommandError("status", f"must be one of {sorted(s.value for s in allowed)}, got {cmd['status']!r}")
    if kind == "control_cas":
        check_cas(cmd)
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
    "checkpoint": (),
    "open_session": (),
    "control_cas": ("key", "if_version"),  # the controller's own records (state/control_kv.py)
}
COMMANDS = frozenset(REQUIRED)


def _session_fields(cmd: dict[str, Any]) -> tuple[str, int, int]:
    client, seq, ack = cmd.get("client"), cmd.get("seq"), cmd.get("ack", 1)
    # Every replica reads these for every command of a session: the valid case first, in one test.
    if (
        type(client) is str
        and 0 < len(client) <= 256
        and type(seq) is int
        and type(ack) is int
        and 1 <= ack <= seq < 2**63
        and cmd.get("type") != "open_session"
    ):
        return client, seq, ack
    if cmd.get("type") == "open_session":
        raise CommandError("client", "open_session opens a session; it is not sent in one")
    if not isinstance(client, str) or not client or len(client) > 256:
        raise CommandError("client", "must be a non-empty string of at most 256 characters")
    for name, value in (("seq", seq), ("ack", ack)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**63:
            raise CommandError(name, "must be a positive integer below 2**63")
    assert isinstance(seq, int) and isinstance(ack, int)
    if ack > seq:
        raise CommandError("ack", f"must not exceed seq ({ack} > {seq}): a client still waits for this command")
    return client, seq, ack


def validate(command: dict[str, Any]) -> dict[str, Any]:
    """Check a command before proposing it, types included; raises CommandError naming the
    field. apply() checks again, so a command that bypassed this is refused there."""
    _validate(command)
    if any(name in command for name in SESSION_FIELDS):
        _session_fields(command)
    return command


def encode(command: dict[str, Any]) -> bytes:
    return fastjson.dumps(validate(command), sort_keys=True, allow_nan=False)
