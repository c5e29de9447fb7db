"""A Consul HTTP API emulator for tests (no Consul server binary is obtainable here).

It implements only the documented behaviour the adapter relies on, each pinned to its page:
- KV (developer.hashicorp.com/consul/api-docs/kv): GET with ?recurse, ?keys&separator=, 404
  when missing, base64 Value (null when empty), CreateIndex/ModifyIndex/Flags/Session; PUT with
  ?cas= (cas=0 creates only if absent), ?flags=, ?acquire=/?release= (session locks) answering
  true/false; DELETE with ?recurse and ?cas=.
- Blocking queries (.../api-docs/features/blocking): X-Consul-Index on reads; ?index=&wait=
  holds the request until the index moves past `index` or `wait` elapses.
- Agent services and TTL checks (.../api-docs/agent/service, .../agent/check): register with
  Check.TTL creates check "service:<ID>" (":<n>" when several), critical until the first pass;
  /v1/agent/check/pass|warn|fail/<id>?note= set its status (a pass lasts TTL); checks register
  on their own (/v1/agent/check/register) and deregister; /v1/agent/services and
  /v1/agent/checks list them; deregistering a service removes its checks.
- Health (.../api-docs/health): /v1/health/service/<name>?passing&tag= returns entries with
  the node's serfHealth check and the service's; /v1/health/checks/<service>;
  /v1/health/state/<state|any>.
- Sessions (.../api-docs/session): create (Name, TTL, Behavior), list, node, info, renew,
  destroy; expiry after TTL; a destroyed or expired session releases its locks, or deletes
  the keys it held when its Behavior is delete.
Not emulated (the adapter uses none of it): script, HTTP and gRPC checks run by the agent,
the catalog, connect/proxies, ACL management, agent members/self/maintenance, filters.
- ACL (.../api-docs/api-structure#authentication): X-Consul-Token; 403 when wrong.
A test fixture only, never a runtime default.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import time
import uuid
from typing import Any

from aiohttp import web

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")


def parse_duration(text: str) -> float:
    m = _DURATION.match(text)
    if not m:
        raise web.HTTPBadRequest(text=f"invalid duration {text!r}")
    return float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def _lower_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k.lower(): (v if k.lower() == "meta" else _lower_keys(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_keys(v) for v in value]
    return value


class ConsulEmulator:
    def __init__(self, token: str | None = None) -> None:
        self.token = token
        self.index = 1
        self.kv: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.checks: dict[str, dict[str, Any]] = {}  # id -> {ttl, status, expires, service_id}
        self.sessions: dict[str, dict[str, Any]] = {}
        self.node = "emulator"
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --- plumbing ---------------------------------------------------------------------------

    async def _bump(self) -> None:
        self.index += 1
        async with self._changed:
            self._changed.notify_all()

    def _expire(self) -> bool:
        now = time.monotonic()
        changed = False
        for check in self.checks.values():
            if check["status"] == "passing" and check["expires"] <= now:
                check["status"] = "critical"
                changed = True
        for sid in [s for s, v in self.sessions.items() if v["expires"] <= now]:
            self._end_session(sid)
            changed = True
        return changed

    def _end_session(self, sid: str) -> None:
        """A session gone releases its locks (or deletes what it held, Behavior "delete")."""
        session = self.sessions.pop(sid, None)
        if session is None:
            return
        for key in [k for k, e in self.kv.items() if e.get("session") == sid]:
            if session["behavior"] == "delete":
                del self.kv[key]
            else:
                self.kv[key]["session"] = None

    async def _block(self, request: web.Request) -> None:
        if "index" not in request.query:
            return
        wanted = int(request.query["index"])
        wait = parse_duration(request.query.get("wait", "300s"))
        deadline = time.monotonic() + wait
        while self.index <= wanted and time.monotonic() < deadline:
            if self._expire():
                await self._bump()
                break
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(0.1, max(0.0, deadline - time.monotonic())))

    def _json(self, data: Any, status: int = 200) -> web.Response:
        return web.json_response(data, status=status, headers={"X-Consul-Index": str(self.index)})

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if self.token is not None and request.headers.get("X-Consul-Token") != self.token:
            return web.Response(status=403, text="ACL not found")
        if self._expire():
            await self._bump()
        result: web.StreamResponse = await handler(request)
        return result

    async def start(self) -> str:
        app = web.Application(middlewares=[self._auth])
        r = app.router
        r.add_get("/v1/kv/{key:.*}", self.kv_get)
        r.add_put("/v1/kv/{key:.*}", self.kv_put)
        r.add_delete("/v1/kv/{key:.*}", self.kv_delete)
        r.add_put("/v1/agent/service/register", self.service_register)
        r.add_put("/v1/agent/service/deregister/{id}", self.service_deregister)
        r.add_put("/v1/agent/check/pass/{id:.*}", self.check_pass)
        r.add_put("/v1/agent/check/warn/{id:.*}", self.check_warn)
        r.add_put("/v1/agent/check/fail/{id:.*}", self.check_fail)
        r.add_put("/v1/agent/check/register", self.check_register)
        r.add_put("/v1/agent/check/deregister/{id:.*}", self.check_deregister)
        r.add_get("/v1/agent/services", self.agent_services)
        r.add_get("/v1/agent/checks", self.agent_checks)
        r.add_get("/v1/health/service/{name}", self.health_service)
        r.add_get("/v1/health/checks/{name}", self.health_checks)
        r.add_get("/v1/health/state/{state}", self.health_state)
        r.add_get("/v1/session/list", self.session_list)
        r.add_get("/v1/session/node/{node}", self.session_node)
        r.add_put("/v1/session/create", self.session_create)
        r.add_put("/v1/session/renew/{id}", self.session_renew)
        r.add_put("/v1/session/destroy/{id}", self.session_destroy)
        r.add_get("/v1/session/info/{id}", self.session_info)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        return f"127.0.0.1:{self.port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- KV ---------------------------------------------------------------------------------

    def _kv_entry(self, key: str) -> dict[str, Any]:
        e = self.kv[key]
        return {
            "Key": key,
            "Value": base64.b64encode(e["value"]).decode() if e["value"] else None,
            "CreateIndex": e["create"],
            "ModifyIndex": e["modify"],
            "LockIndex": e.get("lock_index", 0),
            "Flags": e.get("flags", 0),
            **({"Session": e["session"]} if e.get("session") else {}),
        }

    async def kv_get(self, request: web.Request) -> web.Response:
        await self._block(request)
        key = request.match_info["key"]
        if "recurse" in request.query:
            keys = sorted(k for k in self.kv if k.startswith(key))
        else:
            keys = [key] if key in self.kv else []
        if "keys" in request.query:
            keys = sorted(k for k in self.kv if k.startswith(key))
            separator = request.query.get("separator")
            if separator:  # up to and including the first separator after the prefix
                keys = sorted({k[: k.find(separator, len(key)) + 1] if separator in k[len(key) :] else k for k in keys})
        if not keys:
            return web.Response(status=404, headers={"X-Consul-Index": str(self.index)})
        if "keys" in request.query:
            return self._json(keys)
        return self._json([self._kv_entry(k) for k in keys])

    async def kv_put(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        body = await request.read()
        current = self.kv.get(key)
        if "cas" in request.query:
            cas = int(request.query["cas"])
            if (cas == 0 and current is not None) or (cas != 0 and (current is None or current["modify"] != cas)):
                return self._json(False)
        session, lock_index = (
            current.get("session") if current else None,
            current.get("lock_index", 0) if current else 0,
        )
        if "acquire" in request.query and request.query["acquire"] not in self.sessions:
            return web.Response(status=500, text=f"invalid session {request.query['acquire']!r}")
        if "acquire" in request.query:
            wanted = request.query["acquire"]
            if session not in (None, wanted):
                return self._json(False)  # held by another session
            if session is None:
                lock_index += 1
            session = wanted
        if "release" in request.query:
            if session != request.query["release"]:
                return self._json(False)
            session = None
        new_index = self.index + 1  # _bump() below moves the index here
        self.kv[key] = {
            "value": body,
            "create": current["create"] if current else new_index,
            "modify": new_index,
            "flags": int(request.query.get("flags", 0)),
            "session": session,
            "lock_index": lock_index,
        }
        await self._bump()
        return self._json(True)

    async def kv_delete(self, request: web.Request) -> web.Response:
        key = request.match_info["key"]
        if "cas" in request.query:
            current = self.kv.get(key)
            if current is None or current["modify"] != int(request.query["cas"]):
                return self._json(False)
        doomed = [k for k in self.kv if k.startswith(key)] if "recurse" in request.query else [key]
        for k in doomed:
            self.kv.pop(k, None)
        await self._bump()
        return self._json(True)

    # --- agent services and checks ----------------------------------------------------------

    async def service_register(self, request: web.Request) -> web.Response:
        # Consul decodes request bodies case-insensitively (py-consul sends lower-case keys).
        body = _lower_keys(await request.json())
        sid = body.get("id") or body["name"]
        self.services[sid] = {
            "ID": sid,
            "Service": body["name"],
            "Address": body.get("address", ""),
            "Port": body.get("port", 0),
            "Meta": body.get("meta") or {},
            "Tags": body.get("tags") or [],
        }
        checks = body.get("checks") or ([body["check"]] if body.get("check") else [])
        for i, check in enumerate(checks, start=1):
            if "ttl" not in check:
                continue
            # agent/service docs: a check without CheckID is "service:<id>", ":<n>" when several.
            cid = check.get("checkid") or (f"service:{sid}" if len(checks) == 1 else f"service:{sid}:{i}")
            previous = self.checks.get(cid)  # re-registering keeps the check's current status
            self.checks[cid] = {
                "ttl": parse_duration(check["ttl"]),
                "status": previous["status"] if previous else "critical",
                "expires": previous["expires"] if previous else 0.0,
                "service_id": sid,
            }
        await self._bump()
        return web.Response(status=200)

    async def service_deregister(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        self.services.pop(sid, None)
        for cid in [c for c, v in self.checks.items() if v["service_id"] == sid]:
            del self.checks[cid]
        await self._bump()
        return web.Response(status=200)

    async def check_pass(self, request: web.Request) -> web.Response:
        return await self._set_check(request, "passing")

    async def check_warn(self, request: web.Request) -> web.Response:
        return await self._set_check(request, "warning")

    async def check_fail(self, request: web.Request) -> web.Response:
        return await self._set_check(request, "critical")

    async def _set_check(self, request: web.Request, status: str) -> web.Response:
        check = self.checks.get(request.match_info["id"])
        if check is None:
            return web.Response(status=404, text="CheckID does not have associated TTL")
        was = (check["status"], check.get("output", ""))
        check["status"], check["output"] = status, request.query.get("note", "")
        if status == "passing":
            check["expires"] = time.monotonic() + check["ttl"]
        if (check["status"], check["output"]) != was:
            await self._bump()
        return web.Response(status=200)

    async def check_register(self, request: web.Request) -> web.Response:
        body = _lower_keys(await request.json())
        if "ttl" not in body:
            return web.Response(status=400, text="the emulator runs TTL checks only")
        cid = body.get("id") or body["name"]
        if body.get("serviceid") and body["serviceid"] not in self.services:
            return web.Response(status=404, text=f"ServiceID {body['serviceid']!r} does not exist")
        self.checks[cid] = {
            "ttl": parse_duration(body["ttl"]),
            "status": body.get("status") or "critical",
            "expires": 0.0,
            "service_id": body.get("serviceid") or "",
            "name": body["name"],
            "notes": body.get("notes") or "",
        }
        await self._bump()
        return web.Response(status=200)

    async def check_deregister(self, request: web.Request) -> web.Response:
        if self.checks.pop(request.match_info["id"], None) is None:
            return web.Response(status=404, text="Unknown check")
        await self._bump()
        return web.Response(status=200)

    def _check_view(self, cid: str) -> dict[str, Any]:
        c = self.checks[cid]
        service = self.services.get(c["service_id"], {})
        return {
            "Node": self.node,
            "CheckID": cid,
            "Name": c.get("name") or f"Service '{service.get('Service', '')}' check",
            "Status": c["status"],
            "Notes": c.get("notes", ""),
            "Output": c.get("output", ""),
            "ServiceID": c["service_id"],
            "ServiceName": service.get("Service", ""),
        }

    def _serf_health(self) -> dict[str, Any]:
        """The node's own check, present on every real agent."""
        return {"Node": self.node, "CheckID": "serfHealth", "Name": "Serf Health Status", "Status": "passing",
                "Notes": "", "Output": "Agent alive and reachable", "ServiceID": "", "ServiceName": ""}  # fmt: skip

    async def agent_services(self, request: web.Request) -> web.Response:
        return self._json({sid: {**svc, "Service": svc["Service"]} for sid, svc in sorted(self.services.items())})

    async def agent_checks(self, request: web.Request) -> web.Response:
        return self._json({cid: self._check_view(cid) for cid in sorted(self.checks)})

    async def health_checks(self, request: web.Request) -> web.Response:
        await self._block(request)
        name = request.match_info["name"]
        views = [self._check_view(cid) for cid in sorted(self.checks)]
        return self._json([v for v in views if v["ServiceName"] == name])

    async def health_state(self, request: web.Request) -> web.Response:
        await self._block(request)
        state = request.match_info["state"]
        views = [self._serf_health(), *(self._check_view(cid) for cid in sorted(self.checks))]
        return self._json([v for v in views if state == "any" or v["Status"] == state])

    async def health_service(self, request: web.Request) -> web.Response:
        await self._block(request)
        name = request.match_info["name"]
        out = []
        for sid, svc in sorted(self.services.items()):
            if svc["Service"] != name:
                continue
            if "tag" in request.query and request.query["tag"] not in svc["Tags"]:
                continue
            checks = [self._serf_health(), *(self._check_view(cid) for cid in sorted(self.checks)
                                             if self.checks[cid]["service_id"] == sid)]  # fmt: skip
            if "passing" in request.query and any(c["Status"] != "passing" for c in checks):
                continue
            out.append({"Node": {"Node": self.node, "Address": "127.0.0.1"}, "Service": svc, "Checks": checks})
        return self._json(out)

    # --- sessions ---------------------------------------------------------------------------

    def _in_this_dc(self, request: web.Request) -> web.Response | None:
        dc = request.query.get("dc")
        if dc not in (None, "dc1"):
            return web.Response(status=500, text=f"No path to datacenter {dc!r}")
        return None

    async def session_create(self, request: web.Request) -> web.Response:
        if (refused := self._in_this_dc(request)) is not None:
            return refused
        body = _lower_keys(await request.json()) if request.can_read_body else {}
        if body.get("node") not in (None, self.node):
            return web.Response(status=500, text=f"Missing node registration for {body['node']!r}")
        ttl = parse_duration(body["ttl"]) if body.get("ttl") else None
        sid = str(uuid.uuid4())
        self.sessions[sid] = {
            "ttl": ttl,
            "expires": time.monotonic() + ttl if ttl else float("inf"),
            "Name": body.get("name", ""),
            "behavior": body.get("behavior") or "release",
        }
        await self._bump()
        return self._json({"ID": sid})

    def _session_view(self, sid: str) -> dict[str, Any]:
        s = self.sessions[sid]
        return {"ID": sid, "Name": s["Name"], "Node": self.node, "Behavior": s["behavior"],
                "TTL": f"{s['ttl']:g}s" if s["ttl"] else ""}  # fmt: skip

    async def session_list(self, request: web.Request) -> web.Response:
        if (refused := self._in_this_dc(request)) is not None:
            return refused
        return self._json([self._session_view(sid) for sid in sorted(self.sessions)])

    async def session_node(self, request: web.Request) -> web.Response:
        if (refused := self._in_this_dc(request)) is not None:
            return refused
        node = request.match_info["node"]
        return self._json([self._session_view(sid) for sid in sorted(self.sessions) if node == self.node])

    async def session_renew(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if sid not in self.sessions:
            return web.Response(status=404, text=f"Session id '{sid}' not found")
        ttl = self.sessions[sid]["ttl"]
        self.sessions[sid]["expires"] = time.monotonic() + ttl if ttl else float("inf")
        return self._json([self._session_view(sid)])

    async def session_destroy(self, request: web.Request) -> web.Response:
        if (refused := self._in_this_dc(request)) is not None:
            return refused
        self._end_session(request.match_info["id"])
        await self._bump()
        return self._json(True)

    async def session_info(self, request: web.Request) -> web.Response:
        if (refused := self._in_this_dc(request)) is not None:
            return refused
        sid = request.match_info["id"]
        return self._json([self._session_view(sid)] if sid in self.sessions else None)


def main() -> None:  # python -m tests.consul_emulator: run one by hand on 127.0.0.1
    async def serve() -> None:
        emu = ConsulEmulator()
        print(json.dumps({"address": await emu.start()}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
