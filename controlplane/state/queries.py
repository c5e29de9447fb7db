"""Named read-only queries over a FleetState, for replicas to serve to clients by name
(linearizable or explicitly stale is the caller's choice; see client.ControlPlane.query)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from controlplane.state.fleet import FleetState
from controlplane.state.model import CommandError, _number


def _bbox(args: dict[str, Any]) -> tuple[float, float, float, float] | None:
    box = args.get("bbox")
    if box is None:
        return None
    if not isinstance(box, list | tuple) or len(box) != 4:
        raise CommandError("bbox", "must be [min_lat, min_lon, max_lat, max_lon]")
    # Finite numbers only: a NaN edge held nothing, silently; a null failed inside the query.
    min_lat, min_lon, max_lat, max_lon = (_number(edge, "bbox", -math.inf, math.inf) for edge in box)
    return min_lat, min_lon, max_lat, max_lon


def _enum_arg(args: dict[str, Any], name: str) -> str | None:
    value = args.get(name)
    if value is not None and not isinstance(value, str):
        raise CommandError(name, "must be a string")
    return value


QUERIES: dict[str, tuple[frozenset[str], Callable[[FleetState, dict[str, Any]], Any]]] = {
    "uav": (frozenset({"id"}), lambda s, a: s.uav(a["id"])),
    "mission": (frozenset({"id"}), lambda s, a: s.mission(a["id"])),
    "group": (frozenset({"id"}), lambda s, a: s.group(a["id"])),
    "uavs": (
        frozenset({"station", "status", "bbox"}),
        lambda s, a: s.uavs_where(station=_enum_arg(a, "station"), status=_enum_arg(a, "status"), bbox=_bbox(a)),
    ),
    "missions": (frozenset({"status"}), lambda s, a: s.missions_by_status(_enum_arg(a, "status"))),
    "groups": (frozenset(), lambda s, a: s.groups_list()),
    "stations": (frozenset(), lambda s, a: sorted(s.stations)),
    "counters": (
        frozenset(),
        lambda s, a: {
            "applied_index": s.applied_index,
            "rejections": s.rejections,
            "telemetry": s.telemetry.to_dict(),
            "uavs": len(s.uavs),
            "missions": len(s.missions),
            "groups": len(s.groups),
            "sessions": len(s.sessions),
        },
    ),
    "control_kv": (
        frozenset({"key"}),
        lambda s, a: None if (r := s.control.get(a["key"])) is None else r.to_dict(),
    ),
    "digests": (frozenset(), lambda s, a: {"index": s.applied_index, "digests": s.digests()}),
}


def run_query(state: FleetState, name: str, args: dict[str, Any] | None = None) -> Any:
    """Raises CommandError naming the query or argument that is wrong (unknown ids too)."""
    if name not in QUERIES:
        raise CommandError("query", f"must be one of {sorted(QUERIES)}, got {name!r}")
    allowed, run = QUERIES[name]
    args = dict(args or {})
    if not args.keys() <= allowed:
        unknown = sorted(set(args) - allowed)[0]
        raise CommandError(unknown, f"is not an argument of query {name!r} (allowed: {sorted(allowed)})")
    for needed in ("id", "key"):
        if needed in allowed and needed not in args:
            raise CommandError(needed, f"query {name!r} needs {needed!r}")
    try:
        return run(state, args)
    except ValueError as exc:  # a status that is not one (enum), a bbox that is not numbers
        if isinstance(exc, CommandError):
            raise
        raise CommandError(name, str(exc)) from None
