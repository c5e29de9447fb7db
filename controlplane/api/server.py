"""FleetAPI: the aiohttp application. Routes come from api/openapi.py (one declaration for
both); errors are JSON that name the field; bearer-token auth compares in constant time
(401 without a token, 403 with a wrong one); bodies are size-limited.

    python -m controlplane.api --group fleet [--host 127.0.0.1] [--port 8080] [--token-file F | --insecure]
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from controlplane.api.backend import FleetBackend
from controlplane.api.checks import check_body, check_params
from controlplane.api.openapi import ROUTES, Route, openapi_document
from controlplane.metrics.replica import LATENCY_BUCKETS
from controlplane.metrics.sink import MetricsSink
from controlplane.session import APPLIED, UNKNOWN, keyed_command, outcome
from controlplane.state.fleet import validate
from controlplane.state.model import CommandError, ConflictError, NotFoundError, ident
from controlplane.sync.changefeed import parse_kinds

log = logging.getLogger(__name__)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
PUBLIC = frozenset({"/openapi.json", "/healthz", "/metrics", "/ui"})  # and the page's assets, /ui/...
UI_DIR = Path(__file__).parent / "ui"
UI_TYPES = {"index.html": "text/html", "ui.js": "text/javascript", "ui.css": "text/css", "favicon.svg": "image/svg+xml"}


class MalformedBody(CommandError):
    """The body is not a JSON object at all (400, not 422)."""


def error(status: int, field: str, reason: str) -> web.Response:
    return web.json_response({"error": {"field": field, "reason": reason}}, status=status)


def unknown_outcome(status: int, reason: str) -> web.Response:
    """The command may or may not have been applied: say so, and how to find out or retry."""
    response = web.json_response(
        {
            "error": {"field": "cluster", "reason": reason},
            "outcome": "unknown",
            "hint": "read the record to see whether it applied; retrying is safe only with the same Idempotency-Key",
        },
        status=status,
    )
    response.headers["Retry-After"] = "1"
    return response


def _cause(exc: BaseException) -> BaseException:
    """Ray wraps what a replica raised; the API answers for the original."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class FleetAPI:
    def __init__(
        self,
        backend: FleetBackend,
        *,
        token: str | None = None,
        max_body: int = 1 << 20,
        max_telemetry_body: int = 32 << 20,
        max_streams: int = 256,
        max_streams_per_client: int = 8,
        stream_write_timeout: float = 10.0,
        metrics: Callable[[], tuple[bytes, str]] | None = None,
        sink: MetricsSink | None = None,
    ) -> None:
        """metrics: a scrape's body and content type, served at /metrics (no token: it holds no
        secrets, and scrapers often carry none). sink: where requests are counted and timed
        (controlplane_api_requests_total{route,method,status}, controlplane_api_seconds{route})."""
        if token is not None and not token:
            raise ValueError("token must be non-empty (or None for no auth)")
        if min(max_body, max_telemetry_body, max_streams, max_streams_per_client) < 1 or stream_write_timeout <= 0:
            raise ValueError("body limits, stream bounds and the stream write timeout must be positive")
        self.backend = backend
        self._token = token
        self.max_body = max_body
        self.max_telemetry_body = max_telemetry_body
        self.max_streams = max_streams
        self.max_streams_per_client = max_streams_per_client
        self.stream_write_timeout = stream_write_timeout
        self._streams: dict[str, int] = {}  # open change streams per client address
        self._metrics = metrics
        self._requests = (
            sink.counter("controlplane_api_requests_total", "API requests answered", ("route", "method", "status"))
            if sink is not None
            else None
        )
        self._seconds = (
            sink.histogram("controlplane_api_seconds", "API request duration", ("route",), LATENCY_BUCKETS)
            if sink is not None
            else None
        )

    def __repr__(self) -> str:  # never the token
        return f"FleetAPI(auth={'on' if self._token else 'off'}, max_body={self.max_body})"

    def application(self) -> web.Application:
        app = web.Application(
            client_max_size=max(self.max_body, self.max_telemetry_body),
            middlewares=[self._measure, self._errors, self._auth],
        )
        for route in ROUTES:
            app.router.add_route(route.method, route.path, self._checked(route, getattr(self, route.handler)))
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_get("/healthz", self.healthz)
        if self._metrics is not None:
            app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/ui", self.ui)
        app.router.add_get("/ui/{asset}", self.ui)
        return app

    @staticmethod
    def _checked(route: Route, handler: Handler) -> Handler:
        """The route's parameters checked against the schemas the document publishes first."""

        async def checked(request: web.Request) -> web.StreamResponse:
            check_params(route, request)
            return await handler(request)

        return checked

    # --- middlewares ----------------------------------------------------------------------

    @web.middleware
    async def _measure(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._requests is None or self._seconds is None:
            return await handler(request)
        started = time.perf_counter()
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            resource = request.match_info.route.resource
            route = resource.canonical if resource is not None else "unmatched"  # templates: few label values
            self._requests.inc(1, {"route": route, "method": request.method, "status": str(status)})
            self._seconds.observe(time.perf_counter() - started, {"route": route})

    @web.middleware
    async def _auth(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is None or request.path in PUBLIC or request.path.startswith("/ui/"):
            return await handler(request)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            response = error(401, "Authorization", "a bearer token is required")
            response.headers["WWW-Authenticate"] = 'Bearer realm="uav-control-plane"'
            return response
        if not hmac.compare_digest(given.strip().encode(), self._token.encode()):
            return error(403, "Authorization", "the token is not valid for this cluster")
        return await handler(request)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error(413, "body", "too large for this route")
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = error(exc.status, "request", exc.reason)
            if "Allow" in exc.headers:  # 405: say which methods the resource takes (RFC 9110)
                response.headers["Allow"] = exc.headers["Allow"]
            return response
        except Exception as exc:
            original = _cause(exc)
            if isinstance(original, MalformedBody):
                return error(400, original.field, original.reason)
            if isinstance(original, NotFoundError):
                return error(404, original.field, original.reason)
            if isinstance(original, ConflictError):
                return error(409, original.field, original.reason)
            if isinstance(original, CommandError):
                return error(422, original.field, original.reason)
            if isinstance(original, TimeoutError | ConnectionError) or type(original).__name__ in (
                "ControlPlaneError",
                "NotLeaderError",
                "RayActorError",
                "ActorDiedError",
            ):
                return unknown_outcome(
                    503, f"no leader answered in time ({type(original).__name__}); a command's outcome is unknown"
                )
            log.exception("API %s %s failed", request.method, request.path)
            return error(500, "server", f"internal error ({type(original).__name__})")

    # --- helpers ----------------------------------------------------------------------------

    async def _body(self, request: web.Request, schema: str, limit: int | None = None) -> dict[str, Any]:
        raw = await self._read_limited(request, limit or self.max_body)
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise MalformedBody("body", "must be a JSON object") from None
        if not isinstance(body, dict):
            raise MalformedBody("body", f"must be a JSON object, got {type(body).__name__}")
        return check_body(schema, body)

    @staticmethod
    async def _read_limited(request: web.Request, limit: int) -> bytes:
        """The body, read no further than this route's limit (413 past it): a 1 MB route never
        buffers the 32 MB the telemetry route may take."""
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
        chunks, size = [], 0
        async for chunk in request.content.iter_chunked(64 << 10):
            size += len(chunk)
            if size > limit:
                raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=size)
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _path_id(request: web.Request, name: str) -> str:
        return ident(request.match_info[name], name)

    @staticmethod
    def _consistency(request: web.Request) -> str:
        value = request.query.get("consistency", "linearizable")
        if value not in ("linearizable", "stale"):
            raise CommandError("consistency", f"must be 'linearizable' or 'stale', got {value!r}")
        return value

    @staticmethod
    def _expected(request: web.Request) -> dict[str, Any]:
        raw = request.query.get("expected_version")
        if raw is None:
            return {}
        if not raw.isdigit() or int(raw) < 1:
            raise CommandError("expected_version", f"must be a positive integer, got {raw!r}")
        return {"expected_version": int(raw)}

    async def _command(self, request: web.Request, command: dict[str, Any], created: bool = False) -> web.Response:
        """Propose a command and answer truly: 2xx applied; 404/409/422 refused (nothing was
        applied); 503 (or 500 for a failure inside apply) when the outcome is unknown, never a
        4xx. An Idempotency-Key makes the command its own session, so a retry with the key,
        through any station's API, is applied once."""
        validate(command)
        key = request.headers.get("Idempotency-Key")
        if key is not None:
            keyed_command(command, key)  # a malformed key is refused before anything is proposed
        answer = await self.backend.command(command, idempotency_key=key)
        result = outcome(answer)
        if result == APPLIED:
            return web.json_response(answer, status=201 if created else 200)
        if result == UNKNOWN:
            status = 500 if answer.get("internal") else 503
            return unknown_outcome(status, answer.get("error", "the outcome is unknown"))
        if answer.get("reused"):
            return error(409, "Idempotency-Key", "this key was used for a different request")
        status = 404 if answer.get("not_found") else 409 if answer.get("conflict") else 422
        return error(status, answer.get("field", "command"), answer.get("error", "refused"))

    async def _read(self, request: web.Request, name: str, args: dict[str, Any] | None = None) -> web.Response:
        return web.json_response(await self.backend.query(name, args, self._consistency(request)))

    # --- routes -----------------------------------------------------------------------------

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def metrics(self, request: web.Request) -> web.Response:
        assert self._metrics is not None
        body, content_type = self._metrics()
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def ui(self, request: web.Request) -> web.Response:
        """The live fleet page and its assets, shipped in the package: nothing is loaded from
        elsewhere (the Content-Security-Policy says so to the browser)."""
        name = request.match_info.get("asset", "index.html")
        if name not in UI_TYPES:
            raise web.HTTPNotFound()
        response = web.Response(body=(UI_DIR / name).read_bytes(), content_type=UI_TYPES[name], charset="utf-8")
        response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'"
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def status(self, request: web.Request) -> web.Response:
        replicas = await self.backend.status()
        leaders = [r["replica"] for r in replicas if r.get("role") == "leader"]
        return web.json_response({"leader": leaders[0] if len(leaders) == 1 else None, "replicas": replicas})

    async def list_missions(self, request: web.Request) -> web.Response:
        status = request.query.get("status")
        return await self._read(request, "missions", {"status": status} if status else None)

    async def create_mission(self, request: web.Request) -> web.Response:
        body = await self._body(request, "MissionCreate")
        return await self._command(request, {**body, "type": "create_mission"}, created=True)

    async def get_mission(self, request: web.Request) -> web.Response:
        return await self._read(request, "mission", {"id": self._path_id(request, "mission")})

    async def update_mission(self, request: web.Request) -> web.Response:
        body = await self._body(request, "MissionUpdate")
        mission = self._path_id(request, "mission")
        return await self._command(request, {**body, "type": "set_mission_status", "mission": mission})

    async def delete_mission(self, request: web.Request) -> web.Response:
        mission = self._path_id(request, "mission")
        return await self._command(request, {"type": "delete_mission", "mission": mission, **self._expected(request)})

    async def list_uavs(self, request: web.Request) -> web.Response:
        args: dict[str, Any] = {k: request.query[k] for k in ("station", "status") if k in request.query}
        if "bbox" in request.query:
            try:
                box = [float(x) for x in request.query["bbox"].split(",")]
            except ValueError:
                box = []
            if len(box) != 4:
                raise CommandError("bbox", "must be four numbers: min_lat,min_lon,max_lat,max_lon")
            args["bbox"] = box
        return await self._read(request, "uavs", args)

    async def create_uav(self, request: web.Request) -> web.Response:
        body = await self._body(request, "UAVCreate")
        return await self._command(request, {**body, "type": "register_uav"}, created=True)

    async def get_uav(self, request: web.Request) -> web.Response:
        return await self._read(request, "uav", {"id": self._path_id(request, "uav")})

    async def update_uav(self, request: web.Request) -> web.Response:
        body = await self._body(request, "UAVUpdate")
        return await self._command(request, {**body, "type": "update_uav", "uav": self._path_id(request, "uav")})

    async def delete_uav(self, request: web.Request) -> web.Response:
        uav = self._path_id(request, "uav")
        return await self._command(request, {"type": "delete_uav", "uav": uav, **self._expected(request)})

    async def list_stations(self, request: web.Request) -> web.Response:
        return await self._read(request, "stations")

    async def register_station(self, request: web.Request) -> web.Response:
        station = self._path_id(request, "station")
        return await self._command(request, {"type": "register_station", "station": station})

    async def report_telemetry(self, request: web.Request) -> web.Response:
        station = self._path_id(request, "station")
        body = await self._body(request, "Telemetry", self.max_telemetry_body)
        if not isinstance(body["reports"], list):
            raise CommandError("reports", "must be a list of report objects")
        try:
            answer = await self.backend.report(station, body["reports"])
        except Exception as exc:
            if type(_cause(exc)).__name__ == "ReportError":
                raise CommandError("reports", str(_cause(exc))) from None
            raise
        return web.json_response(answer)

    async def list_groups(self, request: web.Request) -> web.Response:
        return await self._read(request, "groups")

    async def create_group(self, request: web.Request) -> web.Response:
        body = await self._body(request, "GroupCreate")
        return await self._command(request, {**body, "type": "create_group"}, created=True)

    async def get_group(self, request: web.Request) -> web.Response:
        return await self._read(request, "group", {"id": self._path_id(request, "group")})

    async def dissolve_group(self, request: web.Request) -> web.Response:
        group = self._path_id(request, "group")
        return await self._command(request, {"type": "dissolve_group", "group": group, **self._expected(request)})

    async def add_member(self, request: web.Request) -> web.Response:
        body = await self._body(request, "Member")
        return await self._command(request, {**body, "type": "add_member", "group": self._path_id(request, "group")})

    async def remove_member(self, request: web.Request) -> web.Response:
        group, uav = self._path_id(request, "group"), self._path_id(request, "uav")
        return await self._command(
            request, {"type": "remove_member", "group": group, "uav": uav, **self._expected(request)}
        )

    async def changes(self, request: web.Request) -> web.StreamResponse:
        raw = request.query.get("from_index", request.headers.get("Last-Event-ID", "0"))
        if not raw.isdigit():
            raise CommandError("from_index", f"must be a non-negative integer, got {raw!r}")
        index = int(raw)
        try:
            kinds = sorted(parse_kinds(request.query["kinds"].split(",") if "kinds" in request.query else None))
            duration = float(request.query.get("duration", "30"))
        except ValueError as exc:
            raise CommandError("kinds" if "kinds" in str(exc) else "duration", str(exc)) from None
        if not 0 <= duration <= 300:
            raise CommandError("duration", f"must be within [0, 300] seconds, got {duration}")
        client = request.remote or "?"
        if sum(self._streams.values()) >= self.max_streams:
            return self._too_many(503, f"the server has {self.max_streams} change streams open")
        if self._streams.get(client, 0) >= self.max_streams_per_client:
            return self._too_many(429, f"this client has {self.max_streams_per_client} change streams open")
        self._streams[client] = self._streams.get(client, 0) + 1
        try:
            return await self._stream_changes(request, index, kinds, duration)
        finally:
            self._streams[client] -= 1
            if not self._streams[client]:
                del self._streams[client]

    @staticmethod
    def _too_many(status: int, reason: str) -> web.Response:
        response = error(status, "stream", f"{reason}: close one, or retry later")
        response.headers["Retry-After"] = "5"
        return response

    async def _stream_changes(
        self, request: web.Request, index: int, kinds: list[str], duration: float
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + duration

        async def send(text: str) -> None:
            # A reader that does not keep up is cut off (it reconnects with Last-Event-ID)
            # rather than let unsent changes pile up in this process.
            await asyncio.wait_for(response.write(text.encode()), self.stream_write_timeout)

        try:
            while True:
                remaining = deadline - loop.time()
                answer = await self.backend.watch(index, kinds, max(0.0, min(10.0, remaining)))
                if answer["reset"]:
                    await send(f"event: reset\ndata: {json.dumps({'index': answer['index']})}\n\n")
                for change in answer["changes"]:
                    await send(f"id: {change['index']}\nevent: {change['kind']}\ndata: {json.dumps(change)}\n\n")
                if not answer["changes"] and not answer["reset"]:
                    await send(": keep-alive\n\n")
                index = max(index, int(answer["index"]))
                if loop.time() >= deadline:
                    break
            await response.write_eof()
        except (TimeoutError, ConnectionError):
            log.info("change stream to %s closed: the reader stopped reading or went away", request.remote)
        return response


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m controlplane.api", description="Serve the fleet HTTP API")
    p.add_argument("--group", default=os.environ.get("CONTROLPLANE_GROUP", "fleet"))
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token-file", help="file holding the API bearer token (default: $CONTROLPLANE_API_TOKEN)")
    p.add_argument("--address", default="auto", help="Ray cluster address")
    p.add_argument("--insecure", action="store_true", help="serve without a token (anyone may command the fleet)")
    args = p.parse_args(argv)
    token = os.environ.get("CONTROLPLANE_API_TOKEN")
    if args.token_file:
        try:
            token = open(args.token_file).read().strip()  # noqa: SIM115
        except OSError as exc:
            p.error(f"--token-file: {exc}")
    if not token and not args.insecure:
        p.error(
            "no API token: set CONTROLPLANE_API_TOKEN or --token-file, or pass --insecure to let anyone who "
            "reaches the port command the fleet"
        )
    if not token:
        print("warning: --insecure: anyone who reaches the port can command the fleet", file=sys.stderr)
    from controlplane.api.backend import RayFleetBackend
    from controlplane.client import attach

    attach(args.address)
    from controlplane.metrics.ray_sink import RaySink

    api = FleetAPI(RayFleetBackend(args.group), token=token or None, sink=RaySink())
    web.run_app(api.application(), host=args.host, port=args.port, access_log=None)
    return 0
