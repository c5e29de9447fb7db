"""The HTTP API on a real aiohttp server on 127.0.0.1, over an in-process 3-replica group."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from controlplane.api.openapi import ROUTES, openapi_document
from controlplane.api.server import FleetAPI
from tests.fleet_group import HarnessFleet

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def run(scenario, **api_options):
    async def go():
        backend = HarnessFleet()
        await backend.command({"type": "register_station", "station": "alpha"})
        server = TestServer(FleetAPI(backend, token=TOKEN, **api_options).application(), host="127.0.0.1")
        await server.start_server()
        try:
            async with aiohttp.ClientSession(str(server.make_url(""))) as http:
                await scenario(http, backend)
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(go(), 60))


def test_the_openapi_document_matches_the_routes():
    async def scenario(http, backend):
        async with http.get("/openapi.json") as r:  # public, so tools can fetch it
            assert r.status == 200
            doc = await r.json()
        assert doc == json.loads(json.dumps(openapi_document()))
        served = {(m.upper(), p) for p, ops in doc["paths"].items() for m in ops}
        assert served == {(r.method, r.path) for r in ROUTES}
        app = FleetAPI(backend).application()
        mounted = {
            (route.method, route.resource.canonical)
            for route in app.router.routes()
            if route.method != "HEAD"
            and route.resource.canonical not in ("/openapi.json", "/healthz", "/ui", "/ui/{asset}")
        }
        assert mounted == served

    run(scenario)


def test_bearer_token_401_without_403_wrong():
    async def scenario(http, backend):
        async with http.get("/v1/missions") as r:
            assert r.status == 401 and r.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await r.json())["error"]["field"] == "Authorization"
        async with http.get("/v1/missions", headers={"Authorization": "Bearer nope"}) as r:
            assert r.status == 403
            assert TOKEN not in await r.text()
        async with http.get("/v1/missions", headers=AUTH) as r:
            assert r.status == 200 and await r.json() == []

    run(scenario)


def test_missions_lifecycle_and_errors_that_name_the_field():
    async def scenario(http, backend):
        mission = {"mission": "m1", "waypoints": [{"lat": 47.0, "lon": 8.0, "alt": 30}], "priority": 2}
        async with http.post("/v1/missions", json=mission, headers=AUTH) as r:
            assert r.status == 201 and (await r.json())["ok"]
        async with http.post("/v1/missions", json=mission, headers=AUTH) as r:
            assert r.status == 409  # exists
        bad = {"mission": "m2", "waypoints": [{"lat": 95, "lon": 8, "alt": 30}]}
        async with http.post("/v1/missions", json=bad, headers=AUTH) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "waypoints[0].lat"
        async with http.post("/v1/missions", json={**mission, "colour": "red"}, headers=AUTH) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "colour"
        async with http.post("/v1/missions", data=b"[1, 2", headers=AUTH) as r:
            assert r.status == 400
        async with http.get("/v1/missions/m1", headers=AUTH) as r:
            got = await r.json()
            assert r.status == 200 and got["status"] == "pending" and got["version"] == 1
        async with http.get("/v1/missions/nope", headers=AUTH) as r:
            assert r.status == 404 and (await r.json())["error"]["field"] == "mission"
        async with http.patch("/v1/missions/m1", json={"status": "completed"}, headers=AUTH) as r:
            # An illegal transition conflicts with the mission's state: 409, not "invalid".
            assert r.status == 409 and "cannot become completed" in (await r.json())["error"]["reason"]
        stale = {"status": "aborted", "expected_version": 7}
        async with http.patch("/v1/missions/m1", json=stale, headers=AUTH) as r:
            assert r.status == 409 and (await r.json())["error"]["field"] == "expected_version"
        async with http.patch("/v1/missions/m1", json={"status": "aborted", "expected_version": 1}, headers=AUTH) as r:
            assert r.status == 200
        async with http.get("/v1/missions?status=aborted", headers=AUTH) as r:
            assert [m["id"] for m in await r.json()] == ["m1"]
        async with http.get("/v1/missions?status=lost", headers=AUTH) as r:
            assert r.status == 422
        async with http.delete("/v1/missions/m1?expected_version=x", headers=AUTH) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "expected_version"
        async with http.delete("/v1/missions/m1", headers=AUTH) as r:
            assert r.status == 200

    run(scenario)


def test_uavs_telemetry_groups_and_status():
    async def scenario(http, backend):
        async with http.post("/v1/uavs", json={"uav": "u1", "home_station": "alpha"}, headers=AUTH) as r:
            assert r.status == 201
        async with http.post("/v1/uavs", json={"uav": "u2", "home_station": "nowhere"}, headers=AUTH) as r:
            # The referenced station does not exist: 404 naming it, not "invalid".
            assert r.status == 404 and (await r.json())["error"]["field"] == "home_station"
        reports = [
            {"uav": "u1", "time": 5.0, "seq": 1, "lat": 47.4, "lon": 8.5},
            {"uav": "u1", "time": 1, "seq": 1, "lat": 99},
        ]
        async with http.post("/v1/stations/alpha/telemetry", json={"reports": reports}, headers=AUTH) as r:
            answer = await r.json()
            assert r.status == 200 and answer["accepted"] == 1 and answer["reasons"][0]["field"] == "lat"
        async with http.get("/v1/uavs?bbox=47,8,48,9", headers=AUTH) as r:
            assert [u["id"] for u in await r.json()] == ["u1"]
        async with http.get("/v1/uavs?bbox=47,8", headers=AUTH) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "bbox"
        async with http.patch("/v1/uavs/u1", json={"status": "charging", "battery": 40}, headers=AUTH) as r:
            assert r.status == 200
        async with http.get("/v1/uavs/u1?consistency=stale", headers=AUTH) as r:
            u = await r.json()
            assert (u["status"], u["battery"], u["lat"]) == ("charging", 40.0, 47.4)
        async with http.post("/v1/groups", json={"group": "g"}, headers=AUTH) as r:
            assert r.status == 201
        async with http.post("/v1/groups/g/members", json={"uav": "u1"}, headers=AUTH) as r:
            assert r.status == 200
        async with http.post("/v1/groups/g/members", json={"uav": "ghost"}, headers=AUTH) as r:
            assert r.status == 404
        async with http.get("/v1/groups/g", headers=AUTH) as r:
            assert (await r.json())["members"] == ["u1"]
        async with http.delete("/v1/groups/g/members/u1", headers=AUTH) as r:
            assert r.status == 200
        async with http.delete("/v1/groups/g", headers=AUTH) as r:
            assert r.status == 200
        async with http.get("/v1/status", headers=AUTH) as r:
            status = await r.json()
            assert status["leader"] == 1 and len(status["replicas"]) == 3

    run(scenario)


def test_body_limits():
    async def scenario(http, backend):
        big = {"mission": "m", "waypoints": [{"lat": 1, "lon": 1, "alt": 1}] * 200}
        async with http.post("/v1/missions", json=big, headers=AUTH) as r:
            assert r.status == 413 and (await r.json())["error"]["field"] == "body"

    run(scenario, max_body=1024)


def test_change_stream_as_server_sent_events():
    async def scenario(http, backend):
        await backend.command({"type": "create_group", "group": "g"})
        async with http.get("/v1/changes?from_index=0&kinds=group,station&duration=0.3", headers=AUTH) as r:
            assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
            text = await r.text()
        events = [block for block in text.split("\n\n") if block.startswith("id:")]
        assert [e.splitlines()[1] for e in events] == ["event: station", "event: group"]
        last = int(events[-1].splitlines()[0].split()[1])
        async with http.get("/v1/changes?duration=0.2", headers={**AUTH, "Last-Event-ID": str(last)}) as r:
            assert "id:" not in await r.text()  # nothing after the last one seen
        async with http.get("/v1/changes?kinds=weather", headers=AUTH) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "kinds"

    run(scenario)


@pytest.mark.parametrize("path", ["/v1/uavs/has space", "/v1/missions/" + "x" * 200])
def test_bad_ids_in_paths(path):
    async def scenario(http, backend):
        async with http.get(path, headers=AUTH) as r:
            assert r.status == 422

    run(scenario)


def test_an_idempotency_key_applies_a_retried_command_once_and_refuses_reuse():
    async def scenario(http, backend):
        key = {**AUTH, "Idempotency-Key": "order-7f3a"}
        body = {"uav": "u1", "home_station": "alpha"}
        async with http.post("/v1/uavs", json=body, headers=key) as r:
            first = await r.json()
            assert r.status == 201, first
        async with http.post("/v1/uavs", json=body, headers=key) as r:  # the answer was lost: retry
            assert r.status == 201 and await r.json() == first  # the original answer, not "exists"
        async with http.patch("/v1/uavs/u1", json={"battery": 50}, headers={**AUTH, "Idempotency-Key": "b1"}) as r:
            assert r.status == 200
        async with http.patch("/v1/uavs/u1", json={"battery": 50}, headers={**AUTH, "Idempotency-Key": "b1"}) as r:
            assert r.status == 200
        async with http.get("/v1/uavs/u1", headers=AUTH) as r:
            assert (await r.json())["version"] == 2  # one update applied, not two
        async with http.post("/v1/uavs", json={"uav": "u2", "home_station": "alpha"}, headers=key) as r:
            # The key is bound to another request: a conflict with the key's state, nothing applied.
            assert r.status == 409 and (await r.json())["error"]["field"] == "Idempotency-Key"
        async with http.get("/v1/uavs/u2", headers=AUTH) as r:
            assert r.status == 404  # the reused key applied nothing
        async with http.post("/v1/uavs", json=body, headers={**AUTH, "Idempotency-Key": "k" * 201}) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "Idempotency-Key"

    run(scenario)


class _Unknown:
    """A backend whose commands end in an unknown outcome (no answer, expired, failed apply)."""

    def __init__(self, backend, failure):
        self.backend = backend
        self.failure = failure

    def __getattr__(self, name):
        return getattr(self.backend, name)

    async def command(self, command, timeout=5, *, idempotency_key=None):
        if isinstance(self.failure, BaseException):
            raise self.failure
        return self.failure


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (TimeoutError("no answer"), 503),
        ({"ok": False, "index": 9, "expired": True, "field": "seq", "error": "session expired"}, 503),
        ({"ok": False, "index": 9, "internal": True, "field": "entry", "error": "applying failed"}, 500),
    ],
)
def test_an_unknown_outcome_is_never_answered_as_a_refusal(failure, status):
    async def go():
        backend = _Unknown(HarnessFleet(), failure)
        server = TestServer(FleetAPI(backend, token=TOKEN).application(), host="127.0.0.1")
        await server.start_server()
        try:
            async with (
                aiohttp.ClientSession(str(server.make_url(""))) as http,
                http.post("/v1/groups", json={"group": "g"}, headers=AUTH) as r,
            ):
                body = await r.json()
                assert r.status == status, body
                assert body["outcome"] == "unknown" and r.headers["Retry-After"] == "1"
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(go(), 30))
