"""Serve the HTTP API over an in-process group on 127.0.0.1 (for schemathesis):
python -m tests.api_server PORT TOKEN"""

from __future__ import annotations

import asyncio
import sys

from aiohttp import web

from controlplane.api.server import FleetAPI
from tests.fleet_group import HarnessFleet


async def serve(port: int, token: str) -> None:
    backend = HarnessFleet()
    for station in ("alpha", "bravo"):
        await backend.command({"type": "register_station", "station": station})
    runner = web.AppRunner(FleetAPI(backend, token=token).application(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))
