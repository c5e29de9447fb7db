"""The API's routes, declared once: the server mounts them and the OpenAPI 3 document is
built from them (a test checks the two agree)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from controlplane.state.columns import KINEMATICS
from controlplane.state.model import MissionStatus, UAVStatus

# Ids the API takes: letters, digits and _ . : @ ~ - (safe in paths and query strings alike).
ID = {"type": "string", "minLength": 1, "maxLength": 128, "pattern": r"^[A-Za-z0-9_.:@~-]+$"}
COORDINATE = r"-?[0-9]{1,3}(\.[0-9]{1,12})?"
BBOX = {"type": "string", "pattern": rf"^{COORDINATE},{COORDINATE},{COORDINATE},{COORDINATE}$"}
VERSION = {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}
WAYPOINT = {
    "type": "object",
    "required": ["lat", "lon", "alt"],
    "additionalProperties": False,
    "properties": {
        "lat": {"type": "number", "minimum": -90, "maximum": 90},
        "lon": {"type": "number", "minimum": -180, "maximum": 180},
        "alt": {"type": "number", "minimum": 0, "maximum": 10_000},
    },
}
KINEMATIC_PROPS = {name: {"type": "number", "minimum": lo, "maximum": hi} for name, (lo, hi) in KINEMATICS.items()}
ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["field", "reason"],
            "properties": {"field": {"type": "string"}, "reason": {"type": "string"}},
        }
    },
}
ANSWER = {
    "type": "object",
    "required": ["ok", "index"],
    "properties": {"ok": {"type": "boolean"}, "index": {"type": "integer"}},
}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Error": ERROR,
    "Answer": ANSWER,
    "MissionCreate": {
        "type": "object",
        "required": ["mission", "waypoints"],
        "additionalProperties": False,
        "properties": {
            "mission": ID,
            "waypoints": {"type": "array", "minItems": 1, "maxItems": 500, "items": WAYPOINT},
            "priority": {"type": "integer", "minimum": -1000, "maximum": 1000},
            "min_battery": {"type": "number", "minimum": 0, "maximum": 100},
        },
    },
    "MissionUpdate": {
        "type": "object",
        "required": ["status"],
        "additionalProperties": False,
        "properties": {
            "status": {"type": "string", "enum": [s.value for s in MissionStatus if s is not MissionStatus.ASSIGNED]},
            "expected_version": VERSION,
        },
    },
    "UAVCreate": {
        "type": "object",
        "required": ["uav", "home_station"],
        "additionalProperties": False,
        "properties": {"uav": ID, "home_station": ID, **KINEMATIC_PROPS},
    },
    "UAVUpdate": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            # in_mission is the scheduler's to set, not a client's.
            "status": {"type": "string", "enum": [s.value for s in UAVStatus if s is not UAVStatus.IN_MISSION]},
            "expected_version": VERSION,
            **KINEMATIC_PROPS,
        },
    },
    "GroupCreate": {
        "type": "object",
        "required": ["group"],
        "additionalProperties": False,
        "properties": {"group": ID},
    },
    "Member": {
        "type": "object",
        "required": ["uav"],
        "additionalProperties": False,
        "properties": {"uav": ID, "expected_version": VERSION},
    },
    "Telemetry": {
        "type": "object",
        "required": ["reports"],
        "additionalProperties": False,
        "properties": {
            "reports": {
                "type": "array",
                "maxItems": 100_000,
                # Rows are checked one by one: a bad row comes back with its reason and the
                # good ones go on, so the schema does not refuse the batch for one row.
                "items": {
                    "description": "a report: uav (id), time (seconds), seq (integer >= 0), and any of lat, lon, "
                    "alt, battery, vx, vy, vz, status; a row breaking these is answered in `reasons`",
                },
            }
        },
    },
}


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    handler: str  # FleetAPI method name
    summary: str
    body: str | None = None  # a SCHEMAS name
    params: tuple[Param, ...] = ()
    responses: dict[int, str] = field(default_factory=dict)
    stream: bool = False
    links: dict[str, tuple[str, str]] = field(default_factory=dict)  # name -> (operationId, path param)


MISSION_ID = Param("mission", "path", ID, required=True)
UAV_ID = Param("uav", "path", ID, required=True)
GROUP_ID = Param("group", "path", ID, required=True)
STATION_ID = Param("station", "path", ID, required=True)
CONSISTENCY = Param(
    "consistency", "query", {"type": "string", "enum": ["linearizable", "stale"]}, "stale: any replica, may lag"
)
EXPECTED = Param("expected_version", "query", VERSION, "refuse (409) unless the record is at this version")
IDEMPOTENCY = Param(
    "Idempotency-Key",
    "header",
    {"type": "string", "minLength": 1, "maxLength": 200, "pattern": "^[\\x20-\\x7e]+$"},
    "makes the command its own session: retries with the same key, through any station, apply it once "
    "(409 if the key was used for a different request)",
)
COMMAND = {
    200: "applied",
    404: "no such record (or a record it names)",
    409: "conflicts with the record's version or state, or the Idempotency-Key was used for a different request",
    422: "invalid: names the field",
}
CREATE = {
    201: "created",
    404: "a record it names does not exist",
    409: "exists, or the Idempotency-Key was used for a different request",
    422: "invalid: names the field",
}
READ = {200: "the record(s)", 404: "no such record", 422: "bad argument: names it"}

# From each create operation to the operations on the record it made (OpenAPI links), so a
# client (and stateful testing) can follow the id it sent.
LINKS: dict[str, dict[str, tuple[str, str]]] = {
    "mission": {"GetMission": ("get_mission", "mission"), "UpdateMission": ("update_mission", "mission"),
                "DeleteMission": ("delete_mission", "mission")},
    "uav": {"GetUAV": ("get_uav", "uav"), "UpdateUAV": ("update_uav", "uav"), "DeleteUAV": ("delete_uav", "uav")},
    "group": {"GetGroup": ("get_group", "group"), "AddMember": ("add_member", "group"),
              "DissolveGroup": ("dissolve_group", "group")},
}  # fmt: skip

ROUTES: tuple[Route, ...] = (
    Route("GET", "/v1/status", "status", "Replicas, leader, terms, commit and applied indices",
          responses={200: "status"}),
    Route("GET", "/v1/missions", "list_missions", "Missions, optionally by status",
          params=(Param("status", "query", {"type": "string", "enum": [s.value for s in MissionStatus]}), CONSISTENCY),
          responses=READ),
    Route("POST", "/v1/missions", "create_mission", "Create a pending mission", body="MissionCreate",
          responses=CREATE, params=(IDEMPOTENCY,), links=LINKS["mission"]),
    Route("GET", "/v1/missions/{mission}", "get_mission", "One mission", params=(MISSION_ID, CONSISTENCY),
          responses=READ),
    Route("PATCH", "/v1/missions/{mission}", "update_mission", "Move a mission to a new status (legal transitions)",
          body="MissionUpdate", params=(IDEMPOTENCY, MISSION_ID), responses=COMMAND),
    Route("DELETE", "/v1/missions/{mission}", "delete_mission", "Delete a pending or finished mission",
          params=(IDEMPOTENCY, MISSION_ID, EXPECTED), responses=COMMAND),
    Route("GET", "/v1/uavs", "list_uavs", "UAVs by home station, status and/or bounding box",
          params=(Param("station", "query", ID), Param("status", "query", {"type": "string",
                  "enum": [s.value for s in UAVStatus]}),
                  Param("bbox", "query", BBOX, "min_lat,min_lon,max_lat,max_lon (min_lon east of max_lon: "
                        "across the antimeridian)"), CONSISTENCY),
          responses=READ),
    Route("POST", "/v1/uavs", "create_uav", "Register a UAV at its home station", body="UAVCreate",
          responses=CREATE, params=(IDEMPOTENCY,), links=LINKS["uav"]),
    Route("GET", "/v1/uavs/{uav}", "get_uav", "One UAV with its last reported state", params=(UAV_ID, CONSISTENCY),
          responses=READ),
    Route("PATCH", "/v1/uavs/{uav}", "update_uav", "Change a UAV's status or state", body="UAVUpdate",
          params=(IDEMPOTENCY, UAV_ID), responses=COMMAND),
    Route("DELETE", "/v1/uavs/{uav}", "delete_uav", "Deregister a UAV not on a mission",
          params=(IDEMPOTENCY, UAV_ID, EXPECTED),
          responses=COMMAND),
    Route("GET", "/v1/stations", "list_stations", "The fleet's stations (UAVs are homed at them)",
          params=(CONSISTENCY,), responses=READ),
    Route("PUT", "/v1/stations/{station}", "register_station", "Register a station (again: no change)",
          params=(IDEMPOTENCY, STATION_ID),
          responses={200: "registered", 409: "the Idempotency-Key was used for a different request",
                     422: "invalid: names the field"}),
    Route("POST", "/v1/stations/{station}/telemetry", "report_telemetry",
          "A batch of UAV reports through the station's ingest (bad rows come back with reasons)",
          body="Telemetry", params=(STATION_ID,),
          responses={200: "accepted and applied", 404: "no such station", 422: "unreadable batch"}),
    Route("GET", "/v1/groups", "list_groups", "UAV groups", params=(CONSISTENCY,), responses=READ),
    Route("POST", "/v1/groups", "create_group", "Create a UAV group", body="GroupCreate",
          responses=CREATE, params=(IDEMPOTENCY,), links=LINKS["group"]),
    Route("GET", "/v1/groups/{group}", "get_group", "One group", params=(GROUP_ID, CONSISTENCY), responses=READ),
    Route("DELETE", "/v1/groups/{group}", "dissolve_group", "Dissolve a group",
          params=(IDEMPOTENCY, GROUP_ID, EXPECTED),
          responses=COMMAND),
    Route("POST", "/v1/groups/{group}/members", "add_member", "Add a UAV to a group", body="Member",
          params=(IDEMPOTENCY, GROUP_ID), responses=COMMAND),
    Route("DELETE", "/v1/groups/{group}/members/{uav}", "remove_member", "Remove a UAV from a group",
          params=(IDEMPOTENCY, GROUP_ID, UAV_ID, EXPECTED), responses=COMMAND),
    Route("GET", "/v1/changes", "changes",
          "Server-sent events: every change after from_index (or Last-Event-ID); a reset event, then every "
          "record, when that index is older than the feed keeps",
          params=(Param("from_index", "query", {"type": "integer", "minimum": 0}),
                  Param("kinds", "query", {"type": "string"}, "comma-separated: station,uav,mission,group,telemetry"),
                  Param("duration", "query", {"type": "number", "minimum": 0, "maximum": 300},
                        "seconds before the stream ends (reconnect with Last-Event-ID)")),
          responses={200: "text/event-stream", 422: "bad argument",
                     429: "this client has too many change streams open (Retry-After)"}, stream=True),
)  # fmt: skip


def openapi_document(title: str = "UAV fleet control plane") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in ROUTES:
        op: dict[str, Any] = {
            "operationId": r.handler,
            "summary": r.summary,
            "parameters": [
                {"name": p.name, "in": p.where, "required": p.required or p.where == "path", "schema": p.schema}
                | ({"description": p.description} if p.description else {})
                for p in r.params
            ],
            "responses": {
                str(code): {
                    "description": text,
                    "content": {"text/event-stream": {"schema": {"type": "string"}}}
                    if r.stream and code == 200
                    else {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
                    if code >= 400
                    else {"application/json": {"schema": {}}},
                }
                for code, text in {**r.responses, 401: "no bearer token", 403: "wrong token"}.items()
            },
        }
        for name, (operation, param) in r.links.items():
            created = op["responses"]["201"]
            created.setdefault("links", {})[name] = {
                "operationId": operation,
                "parameters": {param: f"$request.body#/{param}"},
            }
        if r.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{r.body}"}}},
            }
            op["responses"]["400"] = {"description": "not a JSON object", "content": _error()}
            op["responses"]["413"] = {"description": "body too large", "content": _error()}
        op["responses"]["503"] = {
            "description": "no leader answered in time: retry after Retry-After seconds (a command's outcome is "
            "unknown: retry it with the same Idempotency-Key)",
            "headers": {"Retry-After": {"schema": {"type": "integer"}}},
            "content": _error(),
        }
        paths.setdefault(r.path, {})[r.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": title, "version": "1"},
        "paths": paths,
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _error() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
