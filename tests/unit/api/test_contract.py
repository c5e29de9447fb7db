"""The API keeps the contract its OpenAPI document states: each of the disagreements a
`schemathesis --checks all` run once found, pinned here (the full run is
tests/conformance/test_api_schemathesis.py)."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest
from yarl import URL

from controlplane.api.checks import check_body
from controlplane.api.openapi import ID, SCHEMAS, openapi_document
from controlplane.state.model import CommandError
from tests.unit.api.test_api import AUTH, run


@pytest.mark.parametrize("raw", ["¹", "٣", "1.0", "-1", "0", str(2**63)])
def test_a_query_integer_is_parsed_one_way_everywhere(raw):
    async def scenario(http, backend):
        async with http.delete(f"/v1/uavs/u1?expected_version={raw}", headers=AUTH) as r:
            assert r.status == 422, await r.text()  # never 500, whatever digits Unicode has
            assert (await r.json())["error"]["field"] == "expected_version"

    run(scenario)


@pytest.mark.parametrize("bad_id", ["a\x1cb", "a\x85", "a b", "a\nb", "é", "x" * 129, "a/b"])
def test_ids_the_schema_forbids_are_refused_in_bodies_and_paths(bad_id):
    assert not re.fullmatch(ID["pattern"].rstrip("$"), bad_id) or len(bad_id) > ID["maxLength"]

    async def scenario(http, backend):
        async with http.post("/v1/groups", json={"group": bad_id}, headers=AUTH) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "group"
        if "/" not in bad_id:
            path = URL("/v1/uavs/" + quote(bad_id, safe=""), encoded=True)  # sent as it is, percent-encoded
            async with http.get(path, headers=AUTH) as r:
                assert r.status == 422 and (await r.json())["error"]["field"] == "uav"

    run(scenario)


def test_every_bound_in_a_body_schema_is_enforced():
    waypoints = [{"lat": 1.0, "lon": 2.0, "alt": 3.0}]

    async def scenario(http, backend):
        for body, field in (
            ({"mission": "m1", "waypoints": waypoints, "priority": 1001}, "priority"),
            ({"mission": "m1", "waypoints": [{"lat": 91, "lon": 0, "alt": 0}]}, "waypoints[0].lat"),
            ({"mission": "m1", "waypoints": waypoints, "extra": 1}, "extra"),
            ({"waypoints": waypoints}, "mission"),
        ):
            async with http.post("/v1/missions", json=body, headers=AUTH) as r:
                assert r.status == 422, await r.text()
                assert (await r.json())["error"]["field"] == field
        async with http.post("/v1/missions", json={"mission": "m1", "waypoints": waypoints, "priority": 1000},
                             headers=AUTH) as r:  # fmt: skip
            assert r.status == 201

    run(scenario)


def test_a_query_value_outside_its_enum_is_refused():
    async def scenario(http, backend):
        async with http.get("/v1/missions?status=bogus", headers=AUTH) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "status"
        async with http.get("/v1/uavs?bbox=1,2,3", headers=AUTH) as r:
            assert r.status == 422 and (await r.json())["error"]["field"] == "bbox"
        async with http.get("/v1/uavs?bbox=50,170,40,-170", headers=AUTH) as r:
            assert r.status == 200  # north of south: an empty box, not an error

    run(scenario)


def test_405_says_which_methods_the_resource_takes():
    async def scenario(http, backend):
        async with http.request("TRACE", "/v1/status", headers=AUTH) as r:
            assert r.status == 405
            assert set(r.headers["Allow"].split(",")) >= {"GET"}
        async with http.put("/v1/missions", headers=AUTH) as r:
            assert r.status == 405 and {"GET", "POST"} <= set(r.headers["Allow"].split(","))

    run(scenario)


def test_refusals_for_the_state_are_404_or_409_and_documented():
    async def scenario(http, backend):
        async with http.post("/v1/uavs", json={"uav": "u1", "home_station": "nowhere"}, headers=AUTH) as r:
            assert r.status == 404 and (await r.json())["error"]["field"] == "home_station"
        assert (await (await http.put("/v1/stations/s1", headers=AUTH)).json())["ok"]
        async with http.post("/v1/uavs", json={"uav": "u1", "home_station": "s1"}, headers=AUTH) as r:
            assert r.status == 201
        async with http.post("/v1/groups", json={"group": "g"}, headers=AUTH) as r:
            assert r.status == 201
        async with http.delete("/v1/groups/g/members/u1", headers=AUTH) as r:
            assert r.status == 409  # not a member: a conflict with the group as it is
        async with http.get("/v1/stations", headers=AUTH) as r:
            assert "s1" in await r.json()

    run(scenario)
    doc = openapi_document()
    assert "404" in doc["paths"]["/v1/uavs"]["post"]["responses"]
    assert "404" in doc["paths"]["/v1/stations/{station}/telemetry"]["post"]["responses"]
    assert "409" in doc["paths"]["/v1/groups/{group}/members/{uav}"]["delete"]["responses"]


def test_create_operations_link_to_their_records():
    doc = openapi_document()
    links = doc["paths"]["/v1/missions"]["post"]["responses"]["201"]["links"]
    assert {link["operationId"] for link in links.values()} == {"get_mission", "update_mission", "delete_mission"}
    assert links["GetMission"]["parameters"] == {"mission": "$request.body#/mission"}
    operations = {op["operationId"] for ops in doc["paths"].values() for op in ops.values()}
    for path in ("/v1/missions", "/v1/uavs", "/v1/groups"):
        for link in doc["paths"][path]["post"]["responses"]["201"]["links"].values():
            assert link["operationId"] in operations


def test_check_body_names_the_deepest_field():
    with pytest.raises(CommandError) as caught:
        check_body("MissionCreate", {"mission": "m", "waypoints": [{"lat": 0, "lon": 0}]})
    assert caught.value.field == "waypoints[0].alt" and caught.value.reason == "is required"
    assert set(SCHEMAS) >= {"MissionCreate", "UAVCreate", "Telemetry"}


def test_a_body_is_read_no_further_than_its_route_allows():
    async def scenario(http, backend):
        async def endless():  # no Content-Length: the limit must hold while reading
            for _ in range(64):
                yield b" " * (64 << 10)

        async with http.post("/v1/groups", data=endless(), headers=AUTH) as r:
            assert r.status == 413 and (await r.json())["error"]["field"] == "body"
        big = b'{"group": "g", "pad": "' + b"x" * (2 << 20) + b'"}'
        async with http.post("/v1/groups", data=big, headers=AUTH) as r:
            assert r.status == 413  # Content-Length alone says too much

    run(scenario)


def test_change_streams_are_bounded_per_client_and_in_total():
    async def scenario(http, backend):
        streams = [await http.get("/v1/changes?duration=30", headers=AUTH) for _ in range(2)]
        try:
            assert all(s.status == 200 for s in streams)
            async with http.get("/v1/changes?duration=30", headers=AUTH) as r:
                assert r.status == 429 and r.headers["Retry-After"]
                assert (await r.json())["error"]["field"] == "stream"
        finally:
            for s in streams:
                s.close()

    run(scenario, max_streams_per_client=2)

    async def total(http, backend):
        first = await http.get("/v1/changes?duration=30", headers=AUTH)
        try:
            async with http.get("/v1/changes?duration=30", headers=AUTH) as r:
                assert r.status == 503 and r.headers["Retry-After"]
        finally:
            first.close()

    run(total, max_streams=1)


def test_a_reader_that_stops_reading_is_cut_off_and_the_server_goes_on():
    import asyncio

    import aiohttp
    from aiohttp.test_utils import TestServer

    from controlplane.api.server import FleetAPI
    from tests.unit.api.test_api import TOKEN

    class Firehose:  # a change feed that always has 100 kB more to say
        def __init__(self) -> None:
            self.index = 0

        async def watch(self, from_index, kinds=None, timeout=10.0):
            await asyncio.sleep(0)
            self.index += 1
            change = {"index": self.index, "kind": "uav", "id": "u", "record": {"pad": "x" * 100_000}}
            return {"reset": False, "index": self.index, "changes": [change]}

        async def status(self):
            return []

    async def go():
        api = FleetAPI(Firehose(), token=TOKEN, stream_write_timeout=0.3)  # type: ignore[arg-type]
        server = TestServer(api.application(), host="127.0.0.1")
        await server.start_server()
        try:
            _reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(
                f"GET /v1/changes?duration=60 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
            )
            await writer.drain()  # ...and never read
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while not api._streams and loop.time() < deadline:
                await asyncio.sleep(0.05)
            assert api._streams, "the stream never opened"
            async with aiohttp.ClientSession(str(server.make_url(""))) as http, http.get("/healthz") as r:
                assert r.status == 200  # the server answers others meanwhile
            while api._streams and loop.time() < deadline:
                await asyncio.sleep(0.05)
            assert not api._streams, "the stalled stream was never cut off"
            writer.close()
        finally:
            await server.close()

    asyncio.run(asyncio.wait_for(go(), 30))


def test_the_api_refuses_to_start_without_a_token_unless_told_insecure():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if k != "CONTROLPLANE_API_TOKEN"}
    result = subprocess.run(
        [sys.executable, "-m", "controlplane.api", "--group", "g", "--address", "127.0.0.1:1"],
        cwd=root, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2 and "--insecure" in result.stderr
