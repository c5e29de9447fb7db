"""NodeGroup finds the leader once for every caller that needs it at the same moment
(against real aiohttp servers on 127.0.0.1 standing in for nodes' status endpoints)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from controlplane.leader_client import RetryElsewhere
from controlplane.node_client import NodeGroup
from controlplane.standalone.wire import PREFIX


class StatusServer:
    def __init__(self, replica: int, role: str, delay: float = 0.0) -> None:
        self.replica, self.role, self.delay, self.asked = replica, role, delay, 0
        self.url = ""

    async def status(self, request: web.Request) -> web.Response:
        self.asked += 1
        await asyncio.sleep(self.delay)
        return web.json_response({"replica": self.replica, "role": self.role, "address": self.url})


async def serving(nodes: list[StatusServer]) -> AsyncIterator[list[web.AppRunner]]:
    runners = []
    try:
        for node in nodes:
            app = web.Application()
            app.router.add_get(f"{PREFIX}/status", node.status)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            port = runner.addresses[0][1]
            node.url = f"http://127.0.0.1:{port}"
            runners.append(runner)
        yield runners
    finally:
        for runner in runners:
            await runner.cleanup()


def test_concurrent_callers_share_one_leader_lookup():
    nodes = [StatusServer(1, "follower", 0.05), StatusServer(2, "leader", 0.05), StatusServer(3, "follower", 0.05)]

    async def go() -> list[str]:
        async for _ in serving(nodes):
            group = NodeGroup([n.url for n in nodes])
            try:
                return await asyncio.gather(*(group._leader(5.0) for _ in range(64)))
            finally:
                await group.close()
        raise AssertionError("not served")

    found = asyncio.run(go())
    assert set(found) == {nodes[1].url}
    assert [n.asked for n in nodes] == [1, 1, 1]  # one lookup, not one per caller


def test_a_caller_waits_no_longer_than_its_own_timeout():
    nodes = [StatusServer(1, "follower", 0.0)]  # no leader anywhere

    async def go() -> None:
        async for _ in serving(nodes):
            group = NodeGroup([n.url for n in nodes])
            try:
                loop = asyncio.get_running_loop()
                started = loop.time()
                with pytest.raises(RetryElsewhere):
                    await group._leader(0.3)
                assert loop.time() - started < 2.0
            finally:
                await group.close()

    asyncio.run(go())
