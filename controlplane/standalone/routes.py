"""What a standalone node serves on its peer port, beside Raft messages and behind the same
cluster token: the calls node_client.NodeGroup makes (the leader stream for commands and
linearizable reads, stale queries, watch, status, telemetry segments, membership, digests).
JSON bodies; command bytes travel as the JSON text they are. The wire format is
standalone/wire.py's and leader_stream/wire.py's."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import web

from controlplane.leader_stream.server import leader_stream_route
from controlplane.raft import NotLeaderError, RaftError
from controlplane.replica import Replica
from controlplane.standalone.wire import PREFIX, encode_error
from controlplane.state.telemetry import ReportError
from controlplane.sync.changefeed import parse_kinds


def _not_leader(replica: Replica) -> web.Response:
    return web.json_response({"error": "not the leader", "leader": replica.node.status().leader_id}, status=421)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError):
        raise web.HTTPBadRequest(text="the body is not JSON") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text="the body must be a JSON object")
    return body


def client_routes(replica: Replica, describe: Callable[[], dict[str, Any]]) -> list[web.RouteDef]:
    """`describe()` adds this node's name and addresses to its status."""

    async def query(request: web.Request) -> web.Response:
        body = await _json(request)
        queries = body.get("queries")
        if not isinstance(queries, list) or not all(isinstance(q, list) and len(q) == 2 for q in queries):
            raise web.HTTPBadRequest(text="queries must be a list of [name, args]")
        try:
            answers = await replica.query_many([(str(n), a) for n, a in queries], str(body.get("consistency")))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        except (RaftError, TimeoutError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=503)
        return web.json_response({"answers": [[ok, answer if ok else encode_error(answer)] for ok, answer in answers]})

    async def status(_: web.Request) -> web.Response:
        return web.json_response({**replica.status(), **describe()})

    async def watch(request: web.Request) -> web.Response:
        try:
            from_index = int(request.query.get("from_index", "0"))
            timeout = min(max(float(request.query.get("timeout", "10")), 0.0), 60.0)
            kinds = sorted(parse_kinds(request.query["kinds"].split(","))) if "kinds" in request.query else None
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        return web.json_response(await replica.watch(from_index, kinds, timeout))

    async def digests(request: web.Request) -> web.Response:
        try:
            index = int(request.query.get("index", ""))
        except ValueError:
            raise web.HTTPBadRequest(text="index must be an integer") from None
        return web.json_response({"digests": replica.checkpoint_digests(index)})

    async def segments(request: web.Request) -> web.Response:
        try:
            applied = await replica.submit_segments([await request.read()])
        except NotLeaderError:
            return _not_leader(replica)
        except (ReportError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"malformed telemetry segment: {exc}") from None
        return web.json_response({"applied": applied[0]})

    async def membership(request: web.Request) -> web.Response:
        body = await _json(request)
        op, node_id = body.get("op"), body.get("node_id")
        if not isinstance(node_id, int) or isinstance(node_id, bool) or node_id < 1:
            raise web.HTTPBadRequest(text="node_id must be a positive integer")
        try:
            await replica.change_membership(str(op), node_id, float(body.get("timeout", 10.0)))
        except NotLeaderError:
            return _not_leader(replica)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from None
        except (RaftError, TimeoutError) as exc:
            return web.json_response({"error": f"{type(exc).__name__}: {exc}"}, status=503)
        return web.json_response({"ok": True})

    return [
        leader_stream_route(replica),
        web.post(f"{PREFIX}/query", query),
        web.get(f"{PREFIX}/status", status),
        web.get(f"{PREFIX}/watch", watch),
        web.get(f"{PREFIX}/digests", digests),
        web.post(f"{PREFIX}/segments", segments),
        web.post(f"{PREFIX}/membership", membership),
    ]
