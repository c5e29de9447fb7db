"""The fleet's records and their rules: UAVs, missions (with validated waypoints and legal
status transitions), UAV groups and stations. Plain data; FleetState changes them."""

from __future__ import annotations

import enum
import math
import re
import struct
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class CommandError(ValueError):
    """A command that is invalid; names the field and the reason."""

    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason

    def __reduce__(self) -> tuple[type[CommandError], tuple[str, str]]:
        # Crosses process boundaries (Ray re-raises it in the caller) with both fields.
        return (type(self), (self.field, self.reason))


class ConflictError(CommandError):
    """The command conflicts with the state as it is: expected_version did not match
    (optimistic concurrency), the record already exists, or its state forbids the change
    (a transition, deleting a UAV on a mission, removing a UAV that is not a member)."""


class NotFoundError(CommandError):
    """The command or query names a record that does not exist."""


class UAVStatus(enum.Enum):
    IDLE = "idle"
    IN_MISSION = "in_mission"
    CHARGING = "charging"
    OFFLINE = "offline"
    MAINTENANCE = "maintenance"


class MissionStatus(enum.Enum):
    PENDING = "pending"
    ASSIGNED = "assigned"
    ACTIVE = "active"
    COMPLETED = "completed"
    ABORTED = "aborted"
    FAILED = "failed"


LEGAL_TRANSITIONS: dict[MissionStatus, frozenset[MissionStatus]] = {
    MissionStatus.PENDING: frozenset({MissionStatus.ASSIGNED, MissionStatus.ABORTED}),
    MissionStatus.ASSIGNED: frozenset({MissionStatus.ACTIVE, MissionStatus.PENDING, MissionStatus.ABORTED}),
    MissionStatus.ACTIVE: frozenset({MissionStatus.COMPLETED, MissionStatus.ABORTED, MissionStatus.FAILED}),
    MissionStatus.COMPLETED: frozenset(),
    MissionStatus.ABORTED: frozenset(),
    MissionStatus.FAILED: frozenset(),
}
FINISHED = frozenset({MissionStatus.COMPLETED, MissionStatus.ABORTED, MissionStatus.FAILED})


def _number(value: Any, name: str, lo: float, hi: float) -> float:
    # The common case first (every command checks several numbers): an exact int or float,
    # in range, finite (x - x is 0 only for a finite x).
    if (type(value) is float or type(value) is int) and lo <= value <= hi and value - value == 0:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CommandError(name, f"must be a finite number, got {value!r}")
    if not lo <= value <= hi:
        raise CommandError(name, f"must be within [{lo}, {hi}], got {value}")
    return float(value)


# The characters str.isspace() calls whitespace, every one of them (tests/unit/state/test_fleet.py
# compares the two over all of Unicode); one search in C instead of a generator per id.
WHITESPACE = re.compile(r"\s")


def ident(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or len(value) > 128 or WHITESPACE.search(value):
        raise CommandError(name, f"must be a non-empty id without spaces (at most 128 chars), got {value!r}")
    return value


@dataclass(frozen=True)
class Waypoint:
    lat: float
    lon: float
    alt: float  # metres above takeoff

    @classmethod
    def parse(cls, raw: Any, name: str) -> Waypoint:
        if not isinstance(raw, dict):
            raise CommandError(name, f"must be an object with lat, lon, alt, got {type(raw).__name__}")
        for key in ("lat", "lon", "alt"):
            if key not in raw:
                raise CommandError(f"{name}.{key}", "is required")
        return cls(
            _number(raw["lat"], f"{name}.lat", -90, 90),
            _number(raw["lon"], f"{name}.lon", -180, 180),
            _number(raw["alt"], f"{name}.alt", 0, 10_000),
        )


def great_circle_m(a_lat: Any, a_lon: Any, b_lat: float, b_lon: float) -> Any:
    """Haversine distance in metres; a_lat/a_lon may be numpy arrays (one distance each)."""
    r = 6_371_000.0
    p1, p2 = np.radians(a_lat), math.radians(b_lat)
    dp, dl = p2 - p1, np.radians(b_lon - np.asarray(a_lon))
    h = np.sin(dp / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * r * np.arcsin(np.minimum(1.0, np.sqrt(h)))


@dataclass(slots=True)
class UAV:
    """A UAV's record. Its kinematics (position, velocity, battery, last report) live in
    FleetState.columns at `row`, where telemetry batches update them column by column."""

    id: str
    home_station: str
    row: int
    status: UAVStatus = UAVStatus.IDLE
    mission: str | None = None
    version: int = 1


WAYPOINT_BYTES = 24  # lat, lon, alt as float64 in the machine's order
_START = struct.Struct("=2d")  # the first waypoint's lat, lon


def pack_route(waypoints: Iterable[Waypoint]) -> bytes:
    """Waypoints as the bytes of one float64 array (lat, lon, alt, lat, ...): a replica holds
    100,000s of missions; three float objects per waypoint cost ~4x the packed form, and an
    `array` object ~1.4x a bytes object (its buffer is a second allocation)."""
    return array("d", [x for w in waypoints for x in (w.lat, w.lon, w.alt)]).tobytes()


def route_start(route: bytes) -> tuple[float, float]:
    """The first waypoint's (lat, lon)."""
    lat, lon = _START.unpack_from(route)
    return lat, lon


@dataclass(slots=True)
class Mission:
    id: str
    route: bytes  # pack_route(waypoints)
    priority: int = 0
    min_battery: float = 0.0
    status: MissionStatus = MissionStatus.PENDING
    uav: str | None = None
    created_index: int = 0
    version: int = 1

    def to_dict(self) -> dict[str, Any]:
        r = memoryview(self.route).cast("d").tolist()
        return {
            "id": self.id,
            "waypoints": [r[i : i + 3] for i in range(0, len(r), 3)],
            "priority": self.priority,
            "min_battery": self.min_battery,
            "status": self.status.value,
            "uav": self.uav,
            "created_index": self.created_index,
            "version": self.version,
        }


@dataclass
class Group:
    id: str
    members: set[str] = field(default_factory=set)
    version: int = 1
