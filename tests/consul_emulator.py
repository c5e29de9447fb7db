"""A Consul HTTP API emulator for tests (no Consul server binary is obtainable here).

It implements only the documented behaviour the adapter relies on, each pinned to its page:
- KV (developer.hashicorp.com/consul/api-docs/kv): GET with ?recurse, 404 when missing,
  base64 Value, CreateIndex/ModifyIndex; PUT with ?cas= (cas=0 creates only if absent)
  answering true/false; DELETE with ?recurse.
- Blocking queries (.../api-docs/features/blocking): X-Consul-Index on reads; ?index=&wait=
  holds the request until the index moves past `index` or `wait` elapses.
- Agent services and TTL checks (.../api-docs/agent/service, .../agent/check): register with
  Check.TTL creates check "service:<ID>", critical until the first pass; /v1/agent/check/pass
  sets it passing until TTL elapses without another pass; deregister removes both.
- Health (.../api-docs/health): /v1/health/service/<name>?passing returns entries whose
  checks all pass.
- Sessions (.../api-docs/session): create with TTL, renew, destroy; expiry after TTL.
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
            del self.sessions[sid]
            changed = True
        return changed

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
        r.add_get("/v1/health/service/{name}", self.health_service)
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
            "Value": base64.b64encode(e["value"]).decode() if e["value"] is not None else None,
            "CreateIndex": e["create"],
            "ModifyIndex": e["modify"],
            "LockIndex": 0,
            "Flags": e.get("flags", 0),
        }

    async def kv_get(self, request: web.Request) -> web.Response:
        await self._block(request)
        key = request.match_info["key"]
        if "recurse" in request.query:
            keys = sorted(k for k in self.kv if k.startswith(key))
        else:
            keys = [key] if key in self.kv else []
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
        new_index = self.index + 1  # _bump() below moves the index here
        self.kv[key] = {
            "value": body,
            "create": current["create"] if current else new_index,
            "modify": new_index,
            "flags": int(request.query.get("flags", 0)),
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
        check = self.checks.get(request.match_info["id"])
        if check is None:
            return web.Response(status=404, text="CheckID does not have associated TTL")
        was = check["status"]
        check["status"], check["expires"] = "passing", time.monotonic() + check["ttl"]
        if was != "passing":
            await self._bump()
        return web.Response(status=200)

    async def health_service(self, request: web.Request) -> web.Response:
        await self._block(request)
        name = request.match_info["name"]
        out = []
        for sid, svc in sorted(self.services.items()):
            if svc["Service"] != name:
                continue
            checks = [
                {"CheckID": cid, "Status": c["status"], "ServiceID": sid}
                for cid, c in self.checks.items()
                if c["service_id"] == sid
            ]
            if "passing" in request.query and any(c["Status"] != "passing" for c in checks):
                continue
            out.append({"Node": {"Node": "emulator", "Address": "127.0.0.1"}, "Service": svc, "Checks": checks})
        return self._json(out)

    # --- sessions ---------------------------------------------------------------------------

    async def session_create(self, request: web.Request) -> web.Response:
        body = _lower_keys(await request.json()) if request.can_read_body else {}
        ttl = parse_duration(body["ttl"]) if body.get("ttl") else 86400.0
        sid = str(uuid.uuid4())
        self.sessions[sid] = {"ttl": ttl, "expires": time.monotonic() + ttl, "Name": body.get("name", "")}
        await self._bump()
        return self._json({"ID": sid})

    def _session_view(self, sid: str) -> dict[str, Any]:
        s = self.sessions[sid]
        return {"ID": sid, "Name": s["Name"], "TTL": f"{s['ttl']:g}s"}

    async def session_renew(self, request: web.Request) -> web.Response:
        sid = request.match_info["id"]
        if sid not in self.sessions:
            return web.Response(status=404, text=f"Session id '{sid}' not found")
        self.sessions[sid]["expires"] = time.monotonic() + self.sessions[sid]["ttl"]
        return self._json([self._session_view(sid)])

    async def session_destroy(self, request: web.Request) -> web.Response:
        self.sessions.pop(request.match_info["id"], None)
        await self._bump()
        return self._json(True)

    async def session_info(self, request: web.Request) -> web.Response:
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
